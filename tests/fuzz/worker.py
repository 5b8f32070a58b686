"""The process that runs one fuzz target's native calls: ``python -m tests.fuzz.worker <target>``.

It loads the target's engine once, then answers length-prefixed pickled payloads on stdin with
``("ok", "")`` or ``("fail", traceback)`` on stdout. A crash ends the process, which is how the
harness (``tests/fuzz/harness.py``) sees it.
"""

from __future__ import annotations

import importlib
import pickle
import struct
import sys
import traceback


def main() -> int:
    target = importlib.import_module(f"tests.fuzz.{sys.argv[1]}")
    engine = target.load()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"R")  # loaded: the harness starts its per-call deadline from here
    stdout.flush()
    while header := stdin.read(8):
        (size,) = struct.unpack("<Q", header)
        payload = pickle.loads(stdin.read(size))
        try:
            target.check(engine, payload)
            reply: tuple[str, str] = ("ok", "")
        except Exception:
            reply = ("fail", traceback.format_exc(limit=8))
        data = pickle.dumps(reply)
        stdout.write(struct.pack("<Q", len(data)) + data)
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
