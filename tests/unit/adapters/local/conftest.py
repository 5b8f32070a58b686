"""One set of embedded models for the local adapters' tests, loaded as the tests first need them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gateway.adapters.local.runtime import LocalModels


@pytest.fixture(scope="package")
def models() -> Iterator[LocalModels]:
    saved = os.environ.get("OMP_WAIT_POLICY")
    local = LocalModels()  # sets OMP_WAIT_POLICY for the process (see runtime.py)
    yield local
    local.close()
    if saved is None:
        os.environ.pop("OMP_WAIT_POLICY", None)  # keep other tests' environment as it was
    else:
        os.environ["OMP_WAIT_POLICY"] = saved
