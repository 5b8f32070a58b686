"""Where the ledger lives: the default SQLite file, PostgreSQL URLs, and no password in any message."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DATA_DIR_ENV, LedgerConfig
from gateway.usage.database import DatabaseUrlError, resolve_database_url
from gateway.usage.engine import describe_error


def test_default_is_sqlite_in_the_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    target = resolve_database_url(LedgerConfig())
    assert target.kind == "sqlite"
    assert target.path == tmp_path / "usage.db"
    assert target.sqlalchemy_url == f"sqlite:///{tmp_path}/usage.db"
    assert target.display == f"sqlite:{tmp_path}/usage.db"


def test_default_without_the_env_is_data_usage_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    target = resolve_database_url(LedgerConfig())
    assert target.path == Path("data/usage.db")
    assert target.display == "sqlite:data/usage.db"


def test_an_explicit_data_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, "/elsewhere")
    assert resolve_database_url(LedgerConfig(), tmp_path).path == tmp_path / "usage.db"


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///relative/usage.db", "relative/usage.db"), ("sqlite:////abs/usage.db", "/abs/usage.db")],
)
def test_sqlite_urls(url: str, path: str) -> None:
    target = resolve_database_url(LedgerConfig.model_validate({"database_url": url}))
    assert (target.kind, target.path, target.display) == ("sqlite", Path(path), f"sqlite:{path}")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg", "POSTGRESQL"])
def test_postgres_schemes_use_psycopg_3(scheme: str) -> None:
    target = resolve_database_url(
        LedgerConfig.model_validate({"database_url": f"{scheme}://gw:s3cr%40t@db.internal:6543/usage"})
    )
    assert target.kind == "postgresql"
    assert target.sqlalchemy_url.startswith("postgresql+psycopg://gw:")
    assert target.display == "postgresql://db.internal:6543/usage"
    assert "s3cr" not in target.display and "s3cr" not in repr(target) and "s3cr" not in str(target)


def test_postgres_defaults_shown() -> None:
    target = resolve_database_url(LedgerConfig.model_validate({"database_url": "postgresql://u:pw@[::1]/ledger"}))
    assert target.display == "postgresql://[::1]:5432/ledger"


def test_an_unparsable_url_is_refused_without_quoting_it() -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        resolve_database_url(LedgerConfig.model_validate({"database_url": "postgresql://u:topsecret@host:notaport/db"}))
    assert "topsecret" not in str(caught.value)


def test_describe_error_masks_the_password() -> None:
    target = resolve_database_url(LedgerConfig.model_validate({"database_url": "postgresql://u:hunter2xyz@host/db"}))
    message = describe_error(RuntimeError("failed for hunter2xyz\nsecond line"), target)
    assert message == "RuntimeError: failed for ***"
