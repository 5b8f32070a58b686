"""A real aiohttp server on 127.0.0.1 with its own event loop in a daemon thread.

The fakes (upstream providers, Dify) subclass it and implement ``_handle``, one catch-all
handler. Running on its own loop means the same instance serves sync tests and async tests
on another loop, as a real remote server would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Any, Self

from aiohttp import web

# Stop must not wait for handlers politely; anything still running is cancelled.
SHUTDOWN_TIMEOUT_S = 0.5


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
