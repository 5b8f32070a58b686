"""Where the ledger lives: ``ledger.database_url`` (or the default SQLite file) as a SQLAlchemy URL.

The password never leaves this module: ``display`` (for logs, errors, ``check-config``) shows
the scheme, host, port and database only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gateway.config import DATA_DIR_ENV, DEFAULT_DATA_DIR, LedgerConfig

DEFAULT_FILE = "usage.db"
DatabaseKind = Literal["sqlite", "postgresql"]


class DatabaseUrlError(ValueError):
    """A database_url that cannot be used (the message never holds the URL's secrets)."""


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    sqlalchemy_url: str = field(repr=False)  # may hold a password: never log it
    kind: DatabaseKind
    display: str  # e.g. sqlite:data/usage.db or postgresql://db.internal:5432/usage
    path: Path | None = None  # the SQLite file (None for PostgreSQL)

    def __str__(self) -> str:
        return self.display


def data_directory(data_dir: Path | None = None) -> Path:
    """The gateway's data directory: the argument, else $DIFY_GATEWAY_DATA_DIR, else ./data."""
    if data_dir is not None:
        return data_dir
    return Path(os.environ.get(DATA_DIR_ENV, "").strip() or DEFAULT_DATA_DIR)


def sqlite_target(path: Path) -> DatabaseTarget:
    return DatabaseTarget(sqlalchemy_url=f"sqlite:///{path}", kind="sqlite", display=f"sqlite:{path}", path=path)


def resolve_database_url(config: LedgerConfig, data_dir: Path | None = None) -> DatabaseTarget:
    """The configured database, or SQLite at ``<data dir>/usage.db``.

    ``postgres://`` and ``postgresql://`` (any driver suffix) use psycopg 3. Raises
    ``DatabaseUrlError`` for a URL SQLAlchemy cannot parse, without quoting it."""
    if config.database_url is None:
        return sqlite_target(data_directory(data_dir) / DEFAULT_FILE)
    text = config.database_url.get_secret_value().strip()
    if text.lower().startswith("sqlite:///"):
        return sqlite_target(Path(text[len("sqlite:///") :]))
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in ("postgres", "postgresql"):
        raise DatabaseUrlError("ledger.database_url must start with sqlite:/// or postgresql://")
    try:
        url = make_url(f"postgresql+psycopg://{rest}")
    except (ArgumentError, ValueError):
        raise DatabaseUrlError(
            "ledger.database_url is not a valid PostgreSQL URL (not shown: it may hold a password)"
        ) from None
    return DatabaseTarget(
        sqlalchemy_url=url.render_as_string(hide_password=False), kind="postgresql", display=_display(url)
    )


def _display(url: URL) -> str:
    host = url.host or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"postgresql://{host}:{url.port or 5432}/{url.database or ''}"
