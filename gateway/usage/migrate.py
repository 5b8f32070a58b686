"""Schema migrations (alembic, run in code): at every start-up and by ``dify-gateway migrate``.

Safe when several processes start at once: PostgreSQL takes an advisory lock around the
upgrade, SQLite an exclusive lock on a file beside the database. Cheap when already at
head: one query, and nothing at all for a URL this process has migrated before.
"""

from __future__ import annotations

import fcntl
import logging
import sys
import threading
import zlib
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import GatewayConfig
from gateway.usage.database import DatabaseTarget, DatabaseUrlError, resolve_database_url
from gateway.usage.engine import LedgerUnwritable, create_ledger_engine, describe_error, ensure_sqlite_writable
from gateway.usage.migrations import VERSION_TABLE

log = logging.getLogger("dify_gateway")
# alembic logs each step at INFO ("Context impl SQLiteImpl.", ...) in every worker at every
# start; the ledger's own line says what was upgraded. Left alone if configured explicitly.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPT_LOCATION = Path(__file__).parent / "migrations"
# pg_advisory_lock takes a bigint: a fixed key derived from a name, the same in every process.
ADVISORY_LOCK_KEY = zlib.crc32(b"dify-gateway ledger migrations")

_migrated: set[str] = set()  # URLs upgraded to head by this process
_guard = threading.Lock()


class MigrationError(Exception):
    """A migration that could not run; the message is one line without secrets."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the ledger's migrations have no head revision")
    return head


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def migrate(target: DatabaseTarget, timeout_s: float = 30.0) -> str:
    """Upgrade the database to head; the revision it is at."""
    return upgrade(target, timeout_s)[0]


def upgrade(target: DatabaseTarget, timeout_s: float = 30.0) -> tuple[str, str | None]:
    """(revision now, revision before: None for an empty database). Raises MigrationError or
    LedgerUnwritable (SQLite)."""
    head = head_revision()
    with _guard:
        if target.sqlalchemy_url in _migrated:
            return head, head
    if target.kind == "sqlite":
        ensure_sqlite_writable(target)
    engine = create_ledger_engine(target, timeout_s, pooled=False)
    try:
        with engine.connect() as connection:
            before = current_revision(connection)
            connection.rollback()
            if before != head:
                before = _upgrade_locked(target, connection, head)
    except SQLAlchemyError as exc:
        raise MigrationError(describe_error(exc, target)) from exc
    finally:
        engine.dispose()
    with _guard:
        _migrated.add(target.sqlalchemy_url)
    if before != head:
        log.info("ledger: %s upgraded to revision %s (from %s)", target.display, head, before or "none")
    return head, before


def _upgrade_locked(target: DatabaseTarget, connection: Connection, head: str) -> str | None:
    """Upgrade under the cross-process lock; the revision found once the lock was held (another
    process may have upgraded meanwhile)."""
    if target.kind == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()
        try:
            return _upgrade_now(connection, head)
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
    assert target.path is not None
    lock_path = target.path.with_name(target.path.name + ".migrate.lock")
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        return _upgrade_now(connection, head)


def _upgrade_now(connection: Connection, head: str) -> str | None:
    before = current_revision(connection)
    connection.rollback()
    if before != head:
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
    return before


def run_migrate(config: GatewayConfig) -> int:
    """``dify-gateway migrate``: upgrade the ledger's database, one line of output; 1 on failure."""
    if not config.ledger.enabled:
        print("ledger: disabled (ledger.enabled: false), nothing to migrate")
        return 0
    try:
        target = resolve_database_url(config.ledger)
    except DatabaseUrlError as exc:
        print(f"dify-gateway: {exc}", file=sys.stderr)
        return 1
    try:
        revision, before = upgrade(target, max(config.ledger.timeout_s, 30.0))
    except LedgerUnwritable as exc:
        print(
            f"dify-gateway: ledger: cannot write {target.display}: {exc.strerror} (set DIFY_GATEWAY_DATA_DIR or "
            "ledger.database_url to a writable place)",
            file=sys.stderr,
        )
        return 1
    except MigrationError as exc:
        print(f"dify-gateway: ledger: cannot migrate {target.display}: {exc}", file=sys.stderr)
        return 1
    done = "already at head" if before == revision else f"upgraded from {before or 'none'}"
    print(f"ledger: {target.display} at revision {revision} ({done})")
    return 0
