"""The ledger's SQLAlchemy engines: psycopg 3 for PostgreSQL, the standard sqlite3 module for SQLite.

Every call is synchronous and runs in a worker thread (never on the event loop). SQLite is
set up so several processes can write one file: WAL (readers never block the writer), a
busy timeout (a writer waits for another's transaction instead of failing), and
synchronous=NORMAL (durable at each checkpoint; a power cut can lose the last
transactions, never corrupt the file).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from gateway.usage.database import DatabaseTarget


class LedgerUnwritable(OSError):
    """The SQLite file cannot be created or written (read-only filesystem, permissions)."""


def create_ledger_engine(target: DatabaseTarget, timeout_s: float, *, pooled: bool = True) -> Engine:
    if target.kind == "sqlite":
        return _sqlite_engine(target, timeout_s, pooled=pooled)
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, round(timeout_s)),
        "application_name": "dify-gateway",
        # A statement that runs past the budget is cancelled by the server itself.
        "options": f"-c statement_timeout={int(timeout_s * 1000)}",
    }
    if not pooled:
        return create_engine(target.sqlalchemy_url, poolclass=NullPool, connect_args=connect_args)
    return create_engine(
        target.sqlalchemy_url,
        pool_size=2,  # one writer thread, plus a report or a budget rebuild
        max_overflow=4,
        pool_pre_ping=True,  # a server restarted while idle: reconnect instead of failing one batch
        pool_recycle=1800,
        connect_args=connect_args,
    )


def ensure_sqlite_writable(target: DatabaseTarget) -> None:
    """Create the SQLite file's directory and check it can be written, or raise LedgerUnwritable."""
    path = target.path
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerUnwritable(exc.errno or errno.EACCES, f"cannot create {path.parent}: {exc.strerror}") from None
    for place in (path.parent, path):
        if place.exists() and not os.access(place, os.W_OK):
            raise LedgerUnwritable(errno.EACCES, f"{place} is not writable")
    # os.access can be wrong (root, some mounts): probe with a real file.
    probe = path.parent / f".{path.name}.probe-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LedgerUnwritable(exc.errno or errno.EACCES, f"cannot write in {path.parent}: {exc.strerror}") from None


def _sqlite_engine(target: DatabaseTarget, timeout_s: float, *, pooled: bool) -> Engine:
    busy_ms = int(timeout_s * 1000)
    options: dict[str, Any] = {"connect_args": {"timeout": timeout_s, "check_same_thread": False}}
    if not pooled:
        options["poolclass"] = NullPool
    engine = create_engine(target.sqlalchemy_url, **options)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            _enable_wal(cursor, timeout_s)
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return engine


def _enable_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch a new file to WAL. The switch needs an exclusive lock and does not wait on the
    busy timeout: two processes opening a new file at once see "database is locked"."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def describe_error(exc: BaseException, target: DatabaseTarget) -> str:
    """One line for logs and the CLI: the error's kind and first line, never the password."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0].strip() if str(original).strip() else ""
    secret = _password(target)
    if secret:
        text = text.replace(secret, "***")
    name = type(original).__name__
    return f"{name}: {text}" if text else name


def _password(target: DatabaseTarget) -> str:
    if target.kind != "postgresql":
        return ""
    return make_url(target.sqlalchemy_url).password or ""
