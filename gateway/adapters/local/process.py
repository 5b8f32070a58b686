"""The gateway's side of one model process (``child.py``): start, call, notice a crash or a hang.

Used from one thread at a time (its slot's worker), so a blocking call here never touches the
event loop. Only this module knows how the child is started and spoken to.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import gateway
from gateway import errors
from gateway.adapters.local.child import CANCEL

# Loading reads the weights and may compile kernels; far more than any model here needs.
LOAD_TIMEOUT_S = 120.0
_CHILD_MODULE = "gateway.adapters.local.child"
# How long a cancelled streaming call may take to end (a model stops within one token).
CANCEL_GRACE_S = 5.0
# How often a streaming call looks for a cancel while it waits for the child.
_POLL_S = 0.05
# The directory that holds the ``gateway`` package, for the child's import path.
_PACKAGE_ROOT = str(Path(gateway.__file__).resolve().parent.parent)


class ChildCrashed(Exception):
    """The child died during a call (its connection closed); ``how`` says how it ended."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class ChildHung(Exception):
    """The child gave no answer before the call's deadline (it has been killed)."""


class ChildLoadFailed(Exception):
    """The child could not load its model; ``reason`` is for the caller and readiness."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChildFailed(Exception):
    """The model raised something other than a ``GatewayError``; the child lives on."""

    def __init__(self, type_name: str, frames: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name
        self.frames = frames


class ModelProcess:
    """One started child with its model loaded."""

    def __init__(self, popen: subprocess.Popen[bytes], conn: Connection) -> None:
        self._popen = popen
        self._conn = conn

    @property
    def pid(self) -> int:
        return self._popen.pid

    @classmethod
    def start(cls, loader_ref: str, options: dict[str, Any], timeout_s: float = LOAD_TIMEOUT_S) -> ModelProcess:
        """Start a child and wait until it has loaded its model; raises ``ChildLoadFailed``."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", _CHILD_MODULE, str(theirs.fileno()), loader_ref, json.dumps(options)]
        argv.append(str(os.getpid()))
        try:
            popen = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            ours.close()
            raise ChildLoadFailed(f"could not start its process ({exc.strerror or exc})") from None
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        child = cls(popen, conn)
        try:
            if not conn.poll(timeout_s):
                child.kill()
                raise ChildLoadFailed(f"did not load within {timeout_s:g} s")
            status = conn.recv()
        except (EOFError, OSError):
            raise ChildLoadFailed(f"its process {child.ended_how()} while loading") from None
        if status[0] != "ready":
            child.close()
            raise ChildLoadFailed(status[1])
        return child

    def alive(self) -> bool:
        return self._popen.poll() is None

    def call(self, request: bytes, deadline: float | None) -> Any:
        """Send one pickled ``(function, args)`` and return the function's result.

        Raises the ``GatewayError`` the model raised, ``ChildFailed`` for any other exception
        in the model, ``ChildCrashed`` when the process died, ``ChildHung`` (after killing it)
        when ``deadline`` (``time.monotonic()``) passed first.
        """
        try:
            self._conn.send_bytes(request)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._conn.poll(timeout):
                self.kill()
                raise ChildHung()
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise ChildCrashed(self.ended_how()) from None
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "error":
            raise _gateway_error(reply[1], reply[2])
        raise ChildFailed(reply[1], reply[2])

    def stream(
        self, request: bytes, deadline: float | None, on_item: Callable[[Any], None], cancelled: threading.Event
    ) -> None:
        """Like ``call`` for a function that yields: ``on_item`` gets each value as it comes.

        Once ``cancelled`` is set the child is told to stop at its next value (a model
        between two tokens); it then has ``CANCEL_GRACE_S`` to end the call before it is
        treated as hung.
        """
        try:
            self._conn.send_bytes(request)
            told = False
            while True:
                if cancelled.is_set() and not told:
                    self._conn.send_bytes(CANCEL)
                    told = True
                    cancel_deadline = time.monotonic() + CANCEL_GRACE_S
                    deadline = cancel_deadline if deadline is None else min(deadline, cancel_deadline)
                # Short waits, so a cancel is passed on while the child is still busy.
                wait = _POLL_S if deadline is None else min(_POLL_S, max(0.0, deadline - time.monotonic()))
                if not self._conn.poll(wait):
                    if deadline is not None and time.monotonic() >= deadline:
                        self.kill()
                        raise ChildHung()
                    continue
                reply = self._conn.recv()
                if reply[0] == "item":
                    on_item(reply[1])
                    continue
                break
        except (EOFError, OSError):
            raise ChildCrashed(self.ended_how()) from None
        if reply[0] == "ok":
            return
        if reply[0] == "error":
            raise _gateway_error(reply[1], reply[2])
        raise ChildFailed(reply[1], reply[2])

    def ended_how(self) -> str:
        """How the process ended ("was killed by SIGSEGV", "exited with status 1")."""
        try:
            code = self._popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self._popen.wait()
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()
        self._conn.close()

    def close(self, wait_s: float = 2.0) -> None:
        """Ask the child to exit (it does once its current call is done); kill it past ``wait_s``."""
        self._conn.close()
        try:
            self._popen.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.kill()


def pack(function: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    """One call for the child; ``function`` must be a module-level function (pickled by name)."""
    return pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)


def _gateway_error(name: str, message: str) -> errors.GatewayError:
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.GatewayError):
        return cls(message)
    return errors.UpstreamUnavailable(message)
