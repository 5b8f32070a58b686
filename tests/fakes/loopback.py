"""A real aiohttp server on 127.0.0.1 with its own event loop in a daemon thread.

The fakes subclass it and implement ``_handle``, one catch-all handler. Running on its own
loop means the same instance serves sync tests and async tests on another loop, as a real
remote server would. ``RecordingServer`` adds what the scripted fakes (upstream providers,
Dify) share: the record of every request with its outcome and timings, the scripted queues
of replies, and resetting the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, NoReturn, Protocol, Self, TypeAlias, TypeVar

from aiohttp import web

# Stop must not wait for handlers politely; anything still running is cancelled.
SHUTDOWN_TIMEOUT_S = 0.5

# Before a reset after some of the reply the server waits this long, so the client has read
# what was written: a receiver (aiohttp, httpx) drops data still unread when the RST arrives.
RESET_GRACE_S = 0.05

# "reset": the fake aborted the connection; "disconnected": the client left (or stop() ran)
# before the reply was complete.
Outcome: TypeAlias = Literal["pending", "completed", "reset", "disconnected"]


class LoopbackServer:
    client_max_size = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        # Running handlers and their connections; stop() aborts and cancels them.
        self._inflight: dict[asyncio.Task[Any], asyncio.Transport | None] = {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=type(self).__name__, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        self._port = asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=5)

    def stop(self) -> None:
        """Close every connection (in-flight handlers are cancelled) and the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._loop = self._thread = None
            self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # start()/stop() block for milliseconds; in async tests run them off the
    # test's loop so a client on that loop is never frozen while we wait.
    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    # -- server thread -----------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _astart(self) -> int:
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client disconnect cancels the handler, which is how hangs
        # and stalls end and how "disconnected" outcomes get recorded.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # loopback only, kernel-chosen port
        await web.SockSite(runner, sock).start()
        self._runner = runner
        port: int = sock.getsockname()[1]
        return port

    async def _astop(self) -> None:
        # Don't wait for handlers (a hang would wait forever): drop their connections,
        # cancel them, and let them record their final outcome.
        tasks = list(self._inflight)
        for task, transport in self._inflight.items():
            if transport is not None:
                transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# Behaviours every scripted fake has (each fake's module exports them with its own).


@dataclass(frozen=True)
class Reset:
    """Abort the connection (TCP RST) before sending anything."""

    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Never answer; the handler waits until the client disconnects or ``stop()``."""


class Exchange(Protocol):
    """What ``RecordingServer`` keeps up to date on a fake's record of one request."""

    status: int | None  # the status sent, once the headers went out
    headers_sent_at: float | None  # time.monotonic(), comparable with the test's clock
    last_byte_at: float | None
    ended_at: float | None
    outcome: Outcome


RecordT = TypeVar("RecordT", bound=Exchange)
StepT = TypeVar("StepT")


class RecordingServer(LoopbackServer, Generic[RecordT, StepT]):
    """A ``LoopbackServer`` that records every request and answers from scripted queues.

    Subclasses build the record once the request is read (``_record``, which calls ``_keep``)
    and answer it (``_dispatch``); the outcome and timing bookkeeping is done here, so a
    reply cut short by a reset, the client leaving or ``stop()`` is recorded the same way in
    every fake. Scripts are queues of steps per key (a Dify path, an upstream model): each
    request pops the next step, the last one is reused forever.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()  # the records and scripts are shared with the test's thread
        self._requests: list[RecordT] = []
        self._scripts: dict[str, deque[StepT]] = {}
        self._seq = itertools.count(1)  # 1-based arrival order

    # -- scripting and inspection (thread-safe) ----------------------------

    def script(self, key: str, *steps: StepT) -> None:
        """Replace the queue of replies for ``key``; no steps clears it."""
        with self._lock:
            if steps:
                self._scripts[key] = deque(steps)
            else:
                self._scripts.pop(key, None)

    @property
    def requests(self) -> list[RecordT]:
        """A snapshot of every recorded request, in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and scripts."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()

    def wait_until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """Poll ``predicate`` (e.g. over ``requests``) until it holds; for sync tests.

        Records are updated by the server thread, possibly just after the client saw the
        last byte, so wait before asserting outcomes and timings.
        """
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{type(self).__name__}.wait_until: condition not met")
            time.sleep(0.005)

    async def await_until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        """``wait_until`` for async tests: the caller's loop keeps running, so e.g. a client
        socket closed on it really closes while we wait for the "disconnected" outcome."""
        # Polling on purpose: the state lives in another thread and loop, so there is no
        # asyncio.Event here that the predicate could wait on.
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    @staticmethod
    def _next_step(queue: deque[StepT] | None) -> StepT | None:
        """Pop the next step (the last one stays); call with the lock held."""
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]

    def _keep(self, rec: RecordT) -> RecordT:
        with self._lock:
            self._requests.append(rec)
        return rec

    # -- request handling --------------------------------------------------

    async def _record(self, request: web.Request, arrived_at: float) -> RecordT:
        raise NotImplementedError

    async def _dispatch(self, request: web.Request, rec: RecordT) -> web.StreamResponse:
        raise NotImplementedError

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived_at = time.monotonic()
        task = asyncio.current_task()
        assert task is not None  # aiohttp runs every handler in a task
        self._inflight[task] = request.transport
        try:
            rec = await self._record(request, arrived_at)
            try:
                resp = await self._dispatch(request, rec)
            except asyncio.CancelledError:
                if rec.outcome == "pending":
                    rec.outcome = "disconnected"
                raise
            finally:
                rec.ended_at = time.monotonic()
            if rec.outcome == "pending":
                rec.outcome = "completed"
            return resp
        finally:
            del self._inflight[task]

    # -- low-level writing, with timing records ----------------------------

    async def _prepare(self, request: web.Request, rec: RecordT, resp: web.StreamResponse) -> None:
        await resp.prepare(request)  # a StreamResponse flushes its headers right here
        rec.status = resp.status
        rec.headers_sent_at = time.monotonic()

    async def _write(self, rec: RecordT, resp: web.StreamResponse, data: bytes) -> None:
        await resp.write(data)
        rec.last_byte_at = time.monotonic()

    async def _finish(self, rec: RecordT, resp: web.StreamResponse) -> web.StreamResponse:
        await resp.write_eof()
        rec.last_byte_at = time.monotonic()
        return resp

    async def _send_whole(
        self, request: web.Request, rec: RecordT, resp: web.StreamResponse, body: bytes
    ) -> web.StreamResponse:
        """Send ``resp`` (status and headers set) with ``body`` and its Content-Length."""
        resp.content_length = len(body)
        await self._prepare(request, rec, resp)
        await self._write(rec, resp, body)
        return await self._finish(rec, resp)

    async def _abort(self, request: web.Request, rec: RecordT) -> NoReturn:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns the close into a TCP RST - what a crashed server or a load
                # balancer reset looks like - rather than a clean FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            rec.outcome = "reset"
            transport.abort()
        # connection_lost now cancels this handler (handler_cancellation=True).
        await wait_for_disconnect()


async def wait_for_disconnect() -> NoReturn:
    """Park the handler; it is cancelled when the client goes away or on stop()."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable: the parking future is never resolved")
