"""The ledger's writer: the request path hands rows over in O(1); one background task writes them.

``add`` appends to a deque and returns. The flusher takes up to ``batch_rows`` every
``flush_interval_ms`` (at once when that many wait) and inserts them in a worker thread.
While the database fails, rows stay queued in order; past ``buffer_rows`` the newest go to
the spill file (past ``spill_max_bytes`` they are dropped and counted). Once the database
answers again, the spill files are replayed in batches between new rows. ``aclose``
writes what it can in time and spills the rest, for the next start to replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy.exc import DataError, IntegrityError

from gateway.config import LedgerConfig
from gateway.usage.database import DatabaseTarget, DatabaseUrlError, data_directory, resolve_database_url
from gateway.usage.engine import LedgerUnwritable, describe_error, ensure_sqlite_writable
from gateway.usage.migrate import migrate
from gateway.usage.row import UsageRow
from gateway.usage.spill import DEFAULT_NAME, Claim, SpillFile
from gateway.usage.store import LedgerStore

log = logging.getLogger("dify_gateway")

_T = TypeVar("_T")
Status = Literal["starting", "ok", "degraded", "off"]

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0
START_WAIT_S = 3.0  # start() waits this long for the database, then carries on in the background
MIGRATE_TIMEOUT_S = 60.0
RETENTION_FIRST_S = 60.0
RETENTION_EVERY_S = 3600.0
FOREIGN_SPILL_EVERY_S = 300.0  # look for spill files left by processes that died meanwhile
OFF_HINT = "set DIFY_GATEWAY_DATA_DIR or ledger.database_url to a writable place, or ledger.enabled: false"


@dataclass(frozen=True, slots=True)
class LedgerState:
    status: Status
    backend: str  # sqlite, postgresql, or "" when off before a database was chosen
    display: str  # the database without secrets
    queued: int  # rows in memory, not yet written
    written: int  # rows confirmed in the database (from memory)
    spilled: int  # rows written to the spill file
    replayed: int  # rows from spill files confirmed in the database
    dropped: int  # rows lost: spill file full or unwritable, refused by the database, or ledger off
    spill_bytes: int  # this process's spill file's size
    last_error: str | None  # without secrets
    last_write_at: float | None  # epoch seconds of the last successful insert


class LedgerBusy(Exception):
    """The previous database call (timed out) has not returned yet."""


def _data_error(exc: BaseException) -> bool:
    """A failure caused by the rows themselves (retrying cannot help), not by the database's health."""
    return isinstance(exc, DataError | IntegrityError | OverflowError | UnicodeError)


class Ledger:
    """The usage ledger as the application sees it (see the module doc). Call ``add`` on the
    event loop's thread."""

    def __init__(
        self,
        config: LedgerConfig,
        *,
        data_dir: Path | None = None,
        retention_first_s: float = RETENTION_FIRST_S,
    ) -> None:
        self._config = config
        self._data_dir = data_dir
        self._retention_first_s = retention_first_s
        self._queue: deque[UsageRow] = deque()
        self._wake = asyncio.Event()
        self._status: Status = "starting"
        self._target: DatabaseTarget | None = None
        self._store: LedgerStore | None = None
        self._spill: SpillFile | None = None
        self._claim: Claim | None = None
        self._replay_due = False
        self._closing = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # One thread for database calls: batches stay in order, and a hung call occupies
        # the ledger's thread, not the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._inflight: asyncio.Future[Any] | None = None
        self._written = self._spilled = self._replayed = self._dropped = 0
        self._last_error: str | None = None
        self._last_write_at: float | None = None
        self._next_purge = 0.0
        self._next_foreign_check = 0.0
        self._spill_warned = False
        self._overflow_at = config.buffer_rows + config.batch_rows

    # -- the request path --------------------------------------------------------------

    def add(self, row: UsageRow) -> None:
        if self._status == "off" or self._closed:
            self._dropped += 1
            return
        queue = self._queue
        queue.append(row)
        # Wake the flusher when a batch is complete, and when the buffer overflows by a batch
        # (spilled while the database is away); never on every row.
        size = len(queue)
        if size == self._config.batch_rows or size == self._overflow_at:
            self._wake.set()

    def state(self) -> LedgerState:
        target = self._target
        return LedgerState(
            status=self._status,
            backend=target.kind if target is not None else "",
            display=target.display if target is not None else "",
            queued=len(self._queue),
            written=self._written,
            spilled=self._spilled,
            replayed=self._replayed,
            dropped=self._dropped,
            spill_bytes=self._spill.bytes if self._spill is not None else 0,
            last_error=self._last_error,
            last_write_at=self._last_write_at,
        )

    @property
    def store(self) -> LedgerStore | None:
        """The database, once connected (None when off or not reached yet)."""
        return self._store

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        config = self._config
        if not config.enabled:
            self._status = "off"
            return
        try:
            target = resolve_database_url(config, self._data_dir)
        except DatabaseUrlError as exc:
            self._off(f"ledger: {exc}; usage is not recorded")
            return
        self._target = target
        if target.kind == "sqlite":
            try:
                await asyncio.to_thread(ensure_sqlite_writable, target)
            except LedgerUnwritable as exc:
                self._off(f"ledger: cannot write {target.display} ({exc.strerror}); usage is not recorded ({OFF_HINT})")
                return
        hint = Path(config.spill_path) if config.spill_path else data_directory(self._data_dir) / DEFAULT_NAME
        self._spill = SpillFile(hint, config.spill_max_bytes)
        self._task = asyncio.create_task(self._run(), name="ledger-flusher")
        waiter = asyncio.create_task(self._connected.wait())
        await asyncio.wait((waiter, self._task), timeout=START_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._status == "starting":
            log.warning("ledger: %s not reachable yet; rows are buffered meanwhile", target.display)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (within ``timeout_s``), spill the rest, release everything."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait((self._task,), timeout=timeout_s)
            if not done:
                self._task.cancel()
                await asyncio.wait((self._task,), timeout=1.0)
        if self._purge_task is not None:
            await asyncio.wait((self._purge_task,), timeout=1.0)
        self._closed = True
        if self._queue and self._status != "off":
            await self._spill_rows(list(self._queue))
            self._queue.clear()
        if self._claim is not None and self._spill is not None:
            self._spill.release(self._claim)
            self._claim = None
        if self._spill is not None:
            self._spill.close()
        if self._store is not None and (self._inflight is None or self._inflight.done()):
            await asyncio.to_thread(self._store.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the flusher ---------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.0
        interval = self._config.flush_interval_ms / 1000
        while self._status != "off":
            if self._closing:
                if not self._queue or self._store is None:
                    return
            elif backoff:
                await self._sleep(backoff)
            elif len(self._queue) < self._config.batch_rows and not self._replaying():
                await self._wait(interval)
            try:
                healthy = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the ledger
                log.exception("ledger: unexpected error in the writer")
                healthy = False
            if healthy:
                backoff = 0.0
            elif self._closing:
                return  # no retries on the way out: the rest goes to the spill file
            else:
                backoff = min(max(backoff * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)

    async def _step(self) -> bool:
        """One round: connect if needed, one batch of queued rows, one batch of replay."""
        if self._store is None and not await self._open():
            await self._spill_overflow()
            return False
        store = self._store
        assert store is not None
        if self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._config.batch_rows))]
            try:
                await self._write(store, batch)
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))
                raise
            except Exception as exc:
                self._queue.extendleft(reversed(batch))  # order kept
                self._failed(exc)
                await self._spill_overflow()
                return False
            self._succeeded()
        if self._replaying() and not self._closing and len(self._queue) < self._config.batch_rows:
            if not await self._replay_batch(store):
                return False
        self._maintain(store)
        return True

    async def _write(self, store: LedgerStore, batch: list[UsageRow], *, replay: bool = False) -> None:
        """Insert a batch and count it (written or replayed); raises when the database failed."""
        refused = 0
        try:
            await self._call(store.insert, batch)
        except Exception as exc:
            if not _data_error(exc):
                raise
            # Some row the database refuses: write the others one by one, drop the refused.
            refused = await self._call(self._insert_each, store, batch)
            if refused:
                self._dropped += refused
                log.warning("ledger: %d rows the database refused were dropped (%s)", refused, self._describe(exc))
        if replay:
            self._replayed += len(batch) - refused
        else:
            self._written += len(batch) - refused

    @staticmethod
    def _insert_each(store: LedgerStore, batch: list[UsageRow]) -> int:
        refused = 0
        for row in batch:
            try:
                store.insert([row])
            except Exception as exc:
                if not _data_error(exc):
                    raise
                refused += 1
        return refused

    async def _open(self) -> bool:
        target = self._target
        assert target is not None
        try:
            if self._config.migrate_on_start:
                await self._call(migrate, target, MIGRATE_TIMEOUT_S, timeout_s=MIGRATE_TIMEOUT_S + 1)
            store = LedgerStore(target, self._config.timeout_s)
            try:
                await self._call(store.ping)
            except BaseException:
                store.close()
                raise
        except LedgerUnwritable as exc:
            self._off(f"ledger: cannot write {target.display} ({exc.strerror}); usage is not recorded ({OFF_HINT})")
            return False
        except Exception as exc:  # MigrationError, the driver's errors, TimeoutError, LedgerBusy
            self._failed(exc)
            return False
        self._store = store
        self._replay_due = True  # spill files left by this or an earlier process
        self._next_purge = time.monotonic() + self._retention_first_s
        self._next_foreign_check = time.monotonic() + FOREIGN_SPILL_EVERY_S
        self._succeeded()
        self._connected.set()
        return True

    # -- spill and replay ----------------------------------------------------------------

    def _replaying(self) -> bool:
        return self._replay_due and self._store is not None and self._status == "ok"

    async def _replay_batch(self, store: LedgerStore) -> bool:
        """Replay one batch of the current spill file (claiming the next file first if needed)."""
        spill = self._spill
        assert spill is not None
        if self._claim is None:
            self._claim = await asyncio.to_thread(self._next_claim, spill)
            if self._claim is None:
                self._replay_due = False
                return True
        claim = self._claim
        rows, offset = await asyncio.to_thread(spill.read, claim, self._config.batch_rows)
        if rows:
            try:
                await self._write(store, rows, replay=True)
            except Exception as exc:
                self._failed(exc)
                return False
        spill.advance(claim, offset)
        if claim.done:
            if claim.torn:
                log.warning("ledger: %d unreadable lines skipped in %s", claim.torn, claim.path.name)
            await asyncio.to_thread(spill.finish, claim)
            self._claim = None
        return True

    @staticmethod
    def _next_claim(spill: SpillFile) -> Claim | None:
        for path in spill.candidates():
            claim = spill.claim(path)
            if claim is not None:
                return claim
        return None

    async def _spill_overflow(self) -> None:
        excess = len(self._queue) - self._config.buffer_rows
        if excess <= 0:
            return
        newest = [self._queue.pop() for _ in range(excess)]
        newest.reverse()
        await self._spill_rows(newest)

    async def _spill_rows(self, rows: list[UsageRow]) -> None:
        spill = self._spill
        if spill is None:
            self._dropped += len(rows)
            return
        try:
            written = await asyncio.to_thread(spill.append, rows)
        except OSError as exc:
            written = 0
            if not self._spill_warned:
                self._spill_warned = True
                log.warning("ledger: cannot write the spill file in %s (%s); rows are dropped", spill.directory, exc)
        self._spilled += written
        self._dropped += len(rows) - written
        if written:
            self._replay_due = True
        if written < len(rows) and written and not self._spill_warned:
            self._spill_warned = True
            log.warning("ledger: spill file full (ledger.spill_max_bytes); rows are dropped")

    # -- retention -----------------------------------------------------------------------

    def _maintain(self, store: LedgerStore) -> None:
        now = time.monotonic()
        if now >= self._next_foreign_check:
            self._next_foreign_check = now + FOREIGN_SPILL_EVERY_S
            self._replay_due = True
        days = self._config.retention_days
        if days <= 0 or now < self._next_purge or self._purge_task is not None:
            return
        self._next_purge = now + RETENTION_EVERY_S
        cutoff = datetime.now(UTC) - timedelta(days=days)
        self._purge_task = asyncio.create_task(self._purge(store, cutoff), name="ledger-retention")

    async def _purge(self, store: LedgerStore, cutoff: datetime) -> None:
        # Its own thread: a long purge must not hold up inserts (each batch is a short transaction).
        try:
            deleted = await asyncio.to_thread(store.purge, cutoff, stop=lambda: self._closing)
            if deleted:
                log.info("ledger: retention deleted %d rows older than %s", deleted, cutoff.date().isoformat())
        except Exception as exc:
            log.warning("ledger: retention failed (%s); next try in an hour", self._describe(exc))
        finally:
            self._purge_task = None

    # -- helpers -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: object, timeout_s: float | None = None) -> _T:
        """Run a database call on the ledger's thread, waiting at most timeout_s (the call
        itself is bounded by the driver's timeouts; a late success is harmless: inserts are
        idempotent)."""
        if self._inflight is not None and not self._inflight.done():
            raise LedgerBusy("the previous database call has not returned yet")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        future.add_done_callback(_retrieve)
        self._inflight = future
        return await asyncio.wait_for(asyncio.shield(future), timeout_s or self._config.timeout_s + 1.0)

    def _failed(self, exc: BaseException) -> None:
        message = self._describe(exc)
        if self._status in ("ok", "starting"):
            log.warning(
                "ledger: %s unavailable (%s); rows are kept in memory, then spilled",
                self._target.display if self._target else "database",
                message,
            )
        self._status = "degraded"
        self._last_error = message

    def _succeeded(self) -> None:
        if self._status == "degraded":
            log.info("ledger: %s reachable again", self._target.display if self._target else "database")
        self._status = "ok"
        self._last_write_at = time.time()

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "TimeoutError: no answer in time"
        return describe_error(exc, self._target) if self._target is not None else type(exc).__name__

    def _off(self, message: str) -> None:
        self._status = "off"
        self._last_error = message
        self._dropped += len(self._queue)
        self._queue.clear()
        log.warning("%s", message)

    async def _sleep(self, seconds: float) -> None:
        """Back off, but spill the overflow at once if the queue outgrows the buffer meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._closing and (left := deadline - time.monotonic()) > 0:
            await self._wait(left)
            if len(self._queue) > self._config.buffer_rows:
                await self._spill_overflow()

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned (timed-out) call's error is already accounted for
