"""One embedded model: loaded once, lazily, and used only on its own worker thread.

Each model gets a single-worker executor, so a busy model (a long transcription) delays only
its own queue, never another model's, and no engine is ever entered from two threads at once
(none of the native engines is documented as re-entrant).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from gateway.adapters.local.catalog import INSTALL_HINT
from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("dify_gateway.local")

M = TypeVar("M")
R = TypeVar("R")


class ModelSlot(Generic[M]):
    def __init__(self, name: str, loader: Callable[[], M]) -> None:
        self.name = name
        self._loader = loader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name.replace("/", "-"))
        self._lock = threading.Lock()
        self._model: tuple[M] | None = None  # a 1-tuple once loaded (M itself may be falsy)
        self._failure: str | None = None  # sticky: a load fails for reasons a retry won't fix
        self._state = "not loaded"

    @property
    def state(self) -> str:
        return self._state

    def check_installed(self, packages: tuple[str, ...]) -> None:
        """For a model left to load on its first call: mark it failed now if a package its
        loader imports is missing (readiness reports it), without importing anything."""
        missing = [name for name in packages if importlib.util.find_spec(name) is None]
        if missing and self._model is None:
            with self._lock:
                self._failure = f"not installed (missing package {missing[0]}); {INSTALL_HINT}"
                self._state = f"failed: {self._failure}"

    async def load(self) -> None:
        """Load the model on its worker; a failure is recorded in ``state``, not raised."""
        try:
            await self.run(lambda _model: None, timeout_s=None, where="preload")
        except GatewayError:
            pass

    async def run(self, work: Callable[[M], R], *, timeout_s: float | None, where: str) -> R:
        """``work(model)`` on the model's worker thread.

        ``work`` may raise ``GatewayError``s; anything else becomes ``UpstreamUnavailable``.
        A call that times out while still queued is dropped; one already running finishes
        in the background (native code cannot be interrupted) and its result is discarded.
        """
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._call, work, where)
        except RuntimeError:  # the executor was shut down
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})") from None
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name}: no result within {timeout_s:g} s ({where})") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller was cancelled
            # Nobody cancelled the caller: close() dropped the queued work.
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})") from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _call(self, work: Callable[[M], R], where: str) -> R:
        model = self._get(where)
        try:
            return work(model)
        except GatewayError:
            raise
        except ImportError as exc:  # a lazily imported package of the local extra is missing
            raise UpstreamUnavailable(f"{self.name}: {_missing(exc)} ({where})") from None
        except Exception as exc:
            # The engine's own message may quote its input, so only the type goes to the caller.
            log.error("%s failed: %s", self.name, type(exc).__name__, exc_info=True)
            raise UpstreamUnavailable(f"{self.name}: the model failed ({type(exc).__name__}) ({where})") from None

    def _get(self, where: str) -> M:
        with self._lock:
            if self._model is not None:
                return self._model[0]
            if self._failure is None:
                self._state = "loading"
                try:
                    self._model = (self._loader(),)
                    self._state = "ready"
                    return self._model[0]
                except ImportError as exc:
                    self._failure = _missing(exc)
                except Exception as exc:
                    self._failure = f"failed to load ({type(exc).__name__}: {exc})"
                self._state = f"failed: {self._failure}"
                log.error("%s: %s", self.name, self._failure)
            raise UpstreamUnavailable(f"{self.name}: {self._failure} ({where})")


def _missing(exc: ImportError) -> str:
    return f"not installed (missing package {exc.name or exc}); {INSTALL_HINT}"
