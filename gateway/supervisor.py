"""The parent of several worker processes: uvicorn's supervisor, with SIGHUP passed on.

uvicorn's own answer to SIGHUP is to replace every worker, which drops their warm state
(embedded models, connection pools, caches) and each worker's requests have to drain. The
gateway's workers reload their configuration in place on SIGHUP (``gateway.reload``), so
the parent only passes the signal on to each of them.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("dify_gateway")


class ReloadingSupervisor(Multiprocess):
    def handle_hup(self) -> None:
        pids = [p.pid for p in self.processes if p.pid is not None and p.process.is_alive()]
        log.info("SIGHUP: reloading the configuration in %d worker(s)", len(pids))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass  # it ended meanwhile; its replacement loads the file as it is now


def run_workers(app: str, workers: int, options: dict[str, Any]) -> None:
    """``uvicorn.run(app, factory=True, workers=workers, **options)`` with this supervisor."""
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    sock = config.bind_socket()
    try:
        ReloadingSupervisor(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
