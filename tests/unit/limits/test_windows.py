from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway.limits.windows import WindowClock, window_for


def test_day_and_month_windows_in_utc() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    day = window_for("day", now, ZoneInfo("UTC"))
    month = window_for("month", now, ZoneInfo("UTC"))
    assert (day.start, day.end, day.tag) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        "20261231",
    )
    assert (month.start, month.end, month.tag) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        "202612",
    )


def test_windows_follow_the_zone_and_its_daylight_saving_changes() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29 has 23 hours in Berlin; 23:30 UTC on the 28th is already the 29th there.
    now = datetime(2026, 3, 28, 23, 30, tzinfo=UTC).timestamp()
    day = window_for("day", now, berlin)
    assert day.tag == "20260329"
    assert day.end.timestamp() - day.start.timestamp() == 23 * 3600
    assert day.end == datetime(2026, 3, 30, tzinfo=berlin)
    feb = window_for("month", datetime(2028, 2, 29, 12, tzinfo=berlin).timestamp(), berlin)
    assert (feb.tag, feb.end) == ("202802", datetime(2028, 3, 1, tzinfo=berlin))


def test_a_zone_whose_clocks_jump_at_midnight_still_has_a_day_start() -> None:
    # Santiago skipped 00:00-01:00 on 2022-09-11: the day starts at the first instant it has.
    zone = ZoneInfo("America/Santiago")
    day = window_for("day", datetime(2022, 9, 11, 12, tzinfo=zone).timestamp(), zone)
    assert day.start.astimezone(UTC) == datetime(2022, 9, 11, 4, tzinfo=UTC)
    assert day.start < day.end


def test_the_clock_recomputes_only_when_it_leaves_the_windows() -> None:
    clock = WindowClock(ZoneInfo("Asia/Tokyo"))
    first = clock.current(datetime(2026, 12, 3, 14, 59, tzinfo=UTC).timestamp())  # 23:59 in Tokyo
    assert clock.current(datetime(2026, 12, 3, 14, 59, 30, tzinfo=UTC).timestamp()) is first
    later = clock.current(datetime(2026, 12, 3, 15, 0, tzinfo=UTC).timestamp())
    assert (first["day"].tag, later["day"].tag) == ("20261203", "20261204")
    # A settle queued before midnight keeps its own day.
    assert clock.at(datetime(2026, 12, 3, 14, 59, tzinfo=UTC).timestamp())["day"].tag == "20261203"
