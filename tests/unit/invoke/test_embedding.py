"""gateway.invoke.embedding: the batch size per provider and its override."""

from __future__ import annotations

from gateway.adapters.registry import Backends
from gateway.config import TargetConfig
from gateway.invoke.embedding import batch_size
from gateway.routing import Target


def test_batch_size_by_provider_and_override() -> None:
    def target(model: str, **kw: object) -> Target:
        return Target(config=TargetConfig(model=model, **kw), model=model)  # type: ignore[arg-type]

    backends = Backends()

    def size(t: Target) -> int:
        return batch_size(t, backends.embedding(t))

    assert size(target("openai/text-embedding-3-small")) == 2048
    assert size(target("cohere/embed-english-v3.0")) == 96
    assert size(target("hosted_vllm/bge")) == 256
    assert size(target("cohere/embed-english-v3.0", max_batch_size=10)) == 10
    assert size(target("tei/bge", api_base="http://tei")) == 32
    assert size(target("tei/bge", api_base="http://tei", max_batch_size=8)) == 8
