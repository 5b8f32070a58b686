"""Graceful drain on SIGTERM, and the cap on requests in flight.

Kubernetes (and ``docker stop``) send SIGTERM while the instance may still be listed as an
endpoint for a few seconds. So on the first SIGTERM:

1. readiness turns 503 at once (load balancers stop sending new work);
2. new requests are still served for ``grace_s``; replies carry ``Connection: close`` so
   clients stop reusing connections to this instance;
3. then the server stops accepting and waits up to ``drain_timeout_s`` (uvicorn's graceful
   shutdown timeout) for requests in flight, streams included, before it exits.

A second SIGTERM skips the rest of the grace. The handler replaces uvicorn's for SIGTERM
only; Ctrl+C keeps uvicorn's behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("dify_gateway")

SignalHandler = Callable[[int, FrameType | None], Any]


class Drain:
    def __init__(self, grace_s: float, timeout_s: float) -> None:
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        self.draining = False
        self._previous: SignalHandler | int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Take over SIGTERM (from the server's own handler, kept to stop the server later).

        Only from the main thread (where signal handlers live); elsewhere, e.g. a server run
        in a thread by tests, SIGTERM handling stays as it was.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self.draining or loop is None:
            self._stop_server(sig, frame)  # a second SIGTERM: stop waiting
            return
        self.draining = True
        log.info(
            "SIGTERM: draining; readiness is 503, new requests are served for %g s, then requests in flight "
            "get up to %g s to finish",
            self.grace_s,
            self.timeout_s,
        )
        loop.call_soon_threadsafe(self._schedule_stop, sig)

    def _schedule_stop(self, sig: int) -> None:
        assert self._loop is not None
        self._stop_timer = self._loop.call_later(self.grace_s, self._stop_server, sig, None)

    def _stop_server(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        previous = self._previous
        server = getattr(previous, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            # uvicorn's Server: ask it to stop directly. Calling its handler would make it
            # re-raise SIGTERM once stopped, and the process would end "killed by SIGTERM"
            # instead of exiting cleanly after a complete drain.
            server.should_exit = True
        elif callable(previous):
            previous(sig, frame)
        else:
            raise SystemExit(0)
