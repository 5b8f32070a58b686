"""The child process that holds one embedded model: ``python -m gateway.adapters.local.child``.

Every embedded model runs native code (e5 in C, espeak-ng, CTranslate2, audio decoders) that
hostile input has been seen to crash. Run here, a crash takes down this process only; the
gateway (``process.py``) sees its connection close, fails that one call and starts a new one.

Wire, over the socket the parent passes as ``fd``, with ``multiprocessing.connection``'s
length-prefixed messages (pickles; both ends are this package):

    child -> parent   ("ready", pid)  or  ("failed", reason)       once, after loading
    parent -> child   (function, args)                             one call: function(model, *args)
    child -> parent   ("item", value) ...                          while a generator call yields
                      ("ok", result)                               or
                      ("error", error class name, message)         a ``GatewayError`` it raised
                      ("failed", exception type name, traceback)   anything else
    parent -> child   b"cancel"                                    stop a generator call at its
                                                                   next item (then ("ok", None));
                                                                   ignored between calls

A call whose function returns a generator streams: each value it yields goes back as an
"item" (``None`` is not sent: it only lets the child look for a cancel between values), and
the call ends with ("ok", None) when the generator is exhausted or cancelled.

The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a signal sent to the process
group reaches it too, and the gateway's drain must finish its calls first); it exits when the
parent closes the connection, and the kernel kills it when the parent dies.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Generator
from multiprocessing.connection import Connection
from typing import Any

from gateway.catalog import INSTALL_HINT
from gateway.errors import GatewayError

CANCEL = b"cancel"


def main(argv: list[str]) -> int:
    fd, loader_ref, options = int(argv[1]), argv[2], json.loads(argv[3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(int(argv[4]))
    conn = Connection(fd)
    try:
        model = _resolve(loader_ref)(**options)
    except ImportError as exc:
        conn.send(("failed", f"not installed (missing package {exc.name or exc}); {INSTALL_HINT}"))
        return 1
    except Exception as exc:
        conn.send(("failed", f"failed to load ({type(exc).__name__}: {exc})"))
        return 1
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return 0  # the gateway closed the connection: shut down
        if request == CANCEL:
            continue  # a cancel that arrived after its call had ended
        try:
            function, args = pickle.loads(request)
            result = function(model, *args)
            if isinstance(result, Generator):
                _stream(conn, result)
                result = None
            reply: tuple[Any, ...] = ("ok", result)
        except _ParentGone:
            return 0
        except GatewayError as exc:
            reply = ("error", type(exc).__name__, exc.message)
        except ImportError as exc:
            reply = (
                "error",
                "UpstreamUnavailable",
                f"not installed (missing package {exc.name or exc}); {INSTALL_HINT}",
            )
        except Exception as exc:
            # The exception's own message may quote its input (prompt text): only its type
            # and the frames it came through go back, for the gateway's log.
            reply = ("failed", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return 0


class _ParentGone(Exception):
    """The connection closed while a generator call was streaming."""


def _stream(conn: Connection, values: Generator[Any, None, None]) -> None:
    """Send what ``values`` yields until it ends or the parent sends ``CANCEL``."""
    try:
        for value in values:
            if conn.poll(0) and conn.recv_bytes() == CANCEL:
                return
            if value is not None:
                conn.send(("item", value))
    except (EOFError, OSError):
        raise _ParentGone() from None
    finally:
        values.close()


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL from the kernel when the gateway process (the thread that started this one)
    goes away, even by SIGKILL: an orphaned model process would hold its memory forever."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
