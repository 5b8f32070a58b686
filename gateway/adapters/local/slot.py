"""One embedded model, run in a supervised child process and spoken to from its own thread.

The model lives in a process of its own (``child.py``), so native code that crashes or hangs
on some input fails that one call, never the gateway. Each model also has a single-worker
thread on this side: calls to one model queue there (a long transcription never holds up an
embedding), and the blocking IPC never touches the event loop.

Supervision: a call whose process dies fails with ``ModelCrashed``; a call with no answer by
its deadline kills the process and fails with ``UpstreamTimeout``. Either way a new process
is started at once in the background, and after consecutive crashes with growing waits
(``RESTART_BACKOFF_S``); a successful call resets the count. While no process is up, the
model's state is "restarting" (readiness reports it). An input that crashed the model is
remembered (a digest of it, never the text) and refused at once if it comes again, so it is
never retried on the fresh process it would crash too.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from gateway.adapters.local.process import (
    ChildCrashed,
    ChildFailed,
    ChildHung,
    ChildLoadFailed,
    ModelProcess,
    pack,
)
from gateway.catalog import INSTALL_HINT
from gateway.errors import GatewayError, ModelCrashed, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("dify_gateway.local")

M = TypeVar("M")
R = TypeVar("R")

# Waits before the 2nd, 3rd, ... consecutive restart; the first is immediate.
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# How many crashing inputs are remembered (32-byte digests).
_POISON_MEMORY = 1024

# Called with (model name, reason: "crash" | "timeout") on every restart (for metrics).
RestartHook = Callable[[str, str], None]


class ModelSlot(Generic[M]):
    """``M`` is the model's type in the child: the type ``work`` functions receive."""

    def __init__(
        self, name: str, loader_ref: str, options: dict[str, Any] | None = None, on_restart: RestartHook | None = None
    ) -> None:
        self.name = name
        self._loader_ref = loader_ref
        self._options = options or {}
        self.on_restart = on_restart
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name.replace("/", "-"))
        self._process: ModelProcess | None = None
        self._failure: str | None = None  # sticky: a load fails for reasons a restart won't fix
        self._state = "not loaded"
        self._crashes = 0  # consecutive, since the last successful call
        self._next_start = 0.0  # time.monotonic() before which no new process is started
        self._poison: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # guards _poison and _state across the loop and the worker
        self.restarts = 0
        self._closed = False
        self._busy = False  # a call is being answered by the process

    @property
    def state(self) -> str:
        """One of: "not loaded", "loading", "ready", "restarting (...)", "failed: <reason>"."""
        process = self._process
        if process is not None and self._state == "ready" and not process.alive():
            # Died while idle (killed from outside, the OOM killer): restart it now, not at
            # the next call.
            self._state = "restarting (its process ended while idle)"
            self._submit(self._restart_when_due)
        return self._state

    @property
    def pid(self) -> int | None:
        """The model process's id while one is up."""
        process = self._process
        return process.pid if process is not None else None

    def check_installed(self, packages: tuple[str, ...]) -> None:
        """For a model left to load on its first call: mark it failed now if a package its
        loader imports is missing (readiness reports it), without importing anything."""
        missing = [name for name in packages if importlib.util.find_spec(name) is None]
        if missing and self._process is None:
            self._failure = f"not installed (missing package {missing[0]}); {INSTALL_HINT}"
            self._state = f"failed: {self._failure}"

    async def load(self) -> None:
        """Start the model's process and load it; a failure is recorded in ``state``, not raised."""
        try:
            await self.run(_loaded, timeout_s=None, where="preload")
        except GatewayError:
            pass

    async def run(self, work: Callable[..., R], *args: Any, timeout_s: float | None, where: str) -> R:
        """``work(model, *args)`` in the model's process; ``work`` must be a module-level
        function and its arguments and result picklable.

        ``work`` may raise ``GatewayError``s; anything else becomes ``UpstreamUnavailable``.
        A call still queued at its deadline is dropped; one running then is stopped by
        killing the process (native code cannot be interrupted otherwise).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._call, _one_call, work, args, timeout_s, deadline, where)
        except RuntimeError:  # the executor was shut down
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})") from None
        try:
            # The worker enforces the deadline too (it kills a hung process): the margin lets
            # its own, more precise error arrive first.
            async with asyncio.timeout(None if timeout_s is None else timeout_s + 1.0):
                result: R = await future
                return result
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name}: no result within {timeout_s:g} s ({where})") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller was cancelled
            # Nobody cancelled the caller: close() dropped the queued work.
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})") from None

    async def stream(
        self, work: Callable[..., Iterator[R]], *args: Any, timeout_s: float, where: str
    ) -> AsyncIterator[R]:
        """The values ``work(model, *args)`` yields in the model's process, as they come.

        Closing the iterator early (the caller stopped reading: a hang-up, a deadline)
        stops the work at its next value; the process stays up for the next call.
        """
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        values: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def on_item(value: Any) -> None:
            loop.call_soon_threadsafe(values.put_nowait, (True, value))

        def exchange(process: ModelProcess, request: bytes, deadline: float | None) -> None:
            process.stream(request, deadline, on_item, cancelled)

        try:
            future = loop.run_in_executor(self._executor, self._call, exchange, work, args, timeout_s, deadline, where)
        except RuntimeError:
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})") from None
        # Runs on the loop after every value the worker passed on (both go through the loop's queue).
        future.add_done_callback(lambda done: values.put_nowait((False, done)))
        future.add_done_callback(_retrieved)  # an error nobody reads after an early close is not logged
        try:
            while True:
                more, value = await values.get()
                if more:
                    yield value
                    continue
                try:
                    value.result()
                except asyncio.CancelledError:
                    raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})") from None
                return
        finally:
            cancelled.set()  # a no-op once the call is over

    def close(self) -> None:
        """Stop without waiting: queued calls are dropped, a running one finishes, then the
        process exits (it is killed if it does not within a few seconds)."""
        with self._lock:
            self._closed = True
            busy = self._busy
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not busy:  # else the running call closes it when it is done
            self._close_process()

    def _close_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            threading.Thread(target=process.close, name=f"close-{self.name}", daemon=True).start()

    # --- on the worker thread -------------------------------------------------------------

    def _call(
        self,
        exchange: Callable[[ModelProcess, bytes, float | None], R],
        work: Callable[..., Any],
        args: tuple[Any, ...],
        timeout_s: float | None,
        deadline: float | None,
        where: str,
    ) -> R:
        if deadline is not None and time.monotonic() >= deadline:
            raise UpstreamTimeout(
                f"{self.name}: no result within {timeout_s:g} s (the call was still queued) ({where})"
            )
        process = self._started(where)
        if deadline is not None and time.monotonic() >= deadline:  # the deadline passed while it loaded
            raise UpstreamTimeout(f"{self.name}: no result within {timeout_s:g} s (the model was loading) ({where})")
        request = pack(work, args)
        digest = self._remembered(request)
        with self._lock:
            if self._closed:
                raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})")
            self._busy = True
        try:
            result = exchange(process, request, deadline)
        except ChildCrashed as exc:
            self._lost(process, "crash", f"crashed ({exc.how})")
            if digest is None:
                digest = _digest(request)
            with self._lock:
                self._poison[digest] = None
                while len(self._poison) > _POISON_MEMORY:
                    self._poison.popitem(last=False)
            log.error("embedded model %s crashed on an input (its process %s); restarting it", self.name, exc.how)
            raise ModelCrashed(
                f"embedded model {self.name} crashed on this input; it was restarted ({where})"
            ) from None
        except ChildHung:
            self._lost(process, "timeout", "hung past a call's deadline")
            log.error("embedded model %s gave no answer by a call's deadline; its process was killed", self.name)
            raise UpstreamTimeout(
                f"{self.name}: no result within {timeout_s:g} s; the embedded model's process was stopped and "
                f"restarted ({where})"
            ) from None
        except ChildFailed as exc:
            self._crashes = 0
            log.error("%s failed: %s\n%s", self.name, exc.type_name, exc.frames.rstrip())
            raise UpstreamUnavailable(f"{self.name}: the model failed ({exc.type_name}) ({where})") from None
        except GatewayError:
            self._crashes = 0
            raise
        finally:
            with self._lock:
                self._busy = False
                closing = self._closed
            if closing:  # close() came while this call ran: the process goes now
                self._close_process()
        self._crashes = 0
        return result

    def _remembered(self, request: bytes) -> bytes | None:
        """The request's digest if crashing inputs are on record (refusing it if it is one)."""
        if not self._poison:
            return None  # nothing on record: no hashing on the common path
        digest = _digest(request)
        with self._lock:
            known = digest in self._poison
        if known:
            raise ModelCrashed(
                f"embedded model {self.name} crashed on this same input before; it is refused without a new attempt"
            )
        return digest

    def _started(self, where: str) -> ModelProcess:
        process = self._process
        if process is not None:
            if process.alive():
                return process
            self._ended_while_idle(process)
        if self._failure is not None:
            raise UpstreamUnavailable(f"{self.name}: {self._failure} ({where})")
        if self._closed:
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})")
        wait = self._next_start - time.monotonic()
        if wait > 0:
            raise UpstreamUnavailable(
                f"{self.name}: restarting after {self._crashes} crashes in a row; the next start is in "
                f"{wait:.1f} s ({where})"
            )
        if process is None and self._crashes == 0 and self._state != "ready":
            self._state = "loading"
        try:
            started = ModelProcess.start(self._loader_ref, self._options)
        except ChildLoadFailed as exc:
            self._failure = exc.reason
            self._state = f"failed: {exc.reason}"
            log.error("%s: %s", self.name, exc.reason)
            raise UpstreamUnavailable(f"{self.name}: {exc.reason} ({where})") from None
        if self._closed:
            started.close()
            raise UpstreamUnavailable(f"{self.name}: the embedded models are shut down ({where})")
        self._process = started
        self._state = "ready"
        return started

    def _lost(self, process: ModelProcess, reason: str, what: str) -> None:
        """The process is gone (or killed): count it and start the next one in the background."""
        process.kill()
        if self._process is process:
            self._process = None
        self._crashes += 1
        self.restarts += 1
        backoff = RESTART_BACKOFF_S[min(self._crashes - 2, len(RESTART_BACKOFF_S) - 1)] if self._crashes > 1 else 0.0
        self._next_start = time.monotonic() + backoff
        self._state = f"restarting (it {what})"
        if self.on_restart is not None:
            self.on_restart(self.name, reason)
        if backoff:
            # A timer, not a sleep on the worker: calls meanwhile fail at once ("restarting").
            timer = threading.Timer(backoff, self._submit, (self._restart_when_due,))
            timer.daemon = True
            timer.start()
        else:
            self._submit(self._restart_when_due)

    def _ended_while_idle(self, process: ModelProcess) -> None:
        log.warning("embedded model %s: its process %s while idle; starting a new one", self.name, process.ended_how())
        process.kill()
        self._process = None
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart(self.name, "crash")

    def _restart_when_due(self) -> None:
        try:
            self._started("restart")
        except GatewayError:
            pass  # recorded in the state

    def _submit(self, job: Callable[[], None]) -> None:
        if not self._closed:
            try:
                self._executor.submit(job)
            except RuntimeError:  # shut down meanwhile
                pass


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _one_call(process: ModelProcess, request: bytes, deadline: float | None) -> Any:
    return process.call(request, deadline)


def _loaded(_model: object) -> None:
    """The call ``load`` makes: nothing, once the model is loaded."""


def _digest(request: bytes) -> bytes:
    return hashlib.blake2b(request, digest_size=32).digest()
