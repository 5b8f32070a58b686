"""Calendar windows (day, month) in the budgets' time zone, from an injected clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.config import Period

# A window's counters outlive its end by this much (a settle queued at 23:59:59 still lands).
KEY_MARGIN_S = 3600.0


@dataclass(frozen=True, slots=True)
class Window:
    period: Period
    start: datetime  # aware, in the budgets' zone
    end: datetime  # the next window's start: when the budget resets
    tag: str  # part of the counter key: 20261203 or 202612
    end_ts: float = field(init=False)
    expire_at_ms: int = field(init=False)  # when its counters may go: the end plus a margin

    def __post_init__(self) -> None:
        object.__setattr__(self, "end_ts", self.end.timestamp())
        object.__setattr__(self, "expire_at_ms", int((self.end_ts + KEY_MARGIN_S) * 1000))


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    # A zone whose clocks jump at midnight has no 00:00 that day; zoneinfo then gives the
    # instant the wall clock would read, which normalising through UTC turns into a real one.
    naive = datetime(day.year, day.month, day.day, tzinfo=zone)
    return naive.astimezone(UTC).astimezone(zone)


def window_for(period: Period, now_ts: float, zone: ZoneInfo) -> Window:
    local = datetime.fromtimestamp(now_ts, zone)
    if period == "day":
        today = local.date()
        return Window(
            "day", _local_midnight(today, zone), _local_midnight(today + timedelta(days=1), zone), f"{today:%Y%m%d}"
        )
    first = local.date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Window("month", _local_midnight(first, zone), _local_midnight(following, zone), f"{first:%Y%m}")


class WindowClock:
    """The current day and month windows, recomputed only when the clock leaves them."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._valid_from = 0.0
        self._valid_until = 0.0
        self._current: dict[Period, Window] = {}

    def current(self, now_ts: float) -> dict[Period, Window]:
        if not self._valid_from <= now_ts < self._valid_until:
            return self._refresh(now_ts)
        return self._current

    def at(self, now_ts: float) -> dict[Period, Window]:
        """The windows at any instant (a settle queued just before midnight keeps its day)."""
        if self._valid_from <= now_ts < self._valid_until:
            return self._current
        return {p: window_for(p, now_ts, self.zone) for p in ("day", "month")}

    def _refresh(self, now_ts: float) -> dict[Period, Window]:
        day = window_for("day", now_ts, self.zone)
        month = window_for("month", now_ts, self.zone)
        self._current = {"day": day, "month": month}
        self._valid_from = max(day.start.timestamp(), month.start.timestamp())
        self._valid_until = min(day.end_ts, month.end_ts)
        return self._current
