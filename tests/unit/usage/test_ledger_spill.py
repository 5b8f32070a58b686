"""The spill file: exact round trip, the size bound, torn lines skipped and counted, and locks
that keep a live process's file from being replayed by another."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

from gateway.usage.row import UsageRow
from gateway.usage.spill import SpillFile


def row(i: int) -> UsageRow:
    return UsageRow(
        created_at=datetime(2026, 12, 3, 12, 0, i % 60, tzinfo=UTC),
        request_id=f"r{i}",
        tenant_id="t'\"; --😀",
        user_id="u",
        model_type="llm",
        provider="p",
        model="m",
        price_usd=Decimal("0.000000000001") * i,
        first_byte_ms=None,
    )


def test_rows_read_back_exactly_in_order(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "usage-spill.jsonl", 1 << 20)
    rows = [row(i) for i in range(25)]
    assert spill.append(rows) == 25
    assert spill.path is not None and spill.path.name.startswith("usage-spill-")
    assert spill.bytes == spill.path.stat().st_size > 0
    assert spill.candidates() == [spill.path]
    claim = spill.claim(spill.path)
    assert claim is not None and claim.own
    first, offset = spill.read(claim, 10)
    spill.advance(claim, offset)
    rest, offset = spill.read(claim, 100)
    spill.advance(claim, offset)
    assert first + rest == rows and claim.done and claim.torn == 0
    spill.finish(claim)
    assert spill.bytes == 0 and spill.candidates() == []
    spill.close()
    assert not spill.path.exists()


def test_past_max_bytes_rows_are_refused_not_half_written(tmp_path: Path) -> None:
    probe = SpillFile(tmp_path / "probe" / "usage-spill.jsonl", 1 << 20)
    probe.append([row(0)])
    line = probe.bytes  # one row's line
    probe.close()
    small = SpillFile(tmp_path / "other" / "usage-spill.jsonl", line * 3 + line // 2)
    assert small.append([row(i) for i in range(10)]) == 3
    assert small.bytes <= line * 3 + line // 2
    small.close()


def test_torn_and_foreign_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    dead = tmp_path / "usage-spill-999999.jsonl"
    good = [row(i) for i in range(3)]
    lines = [orjson.dumps(good[0].to_json()), b"not json", orjson.dumps({"id": "x"}), orjson.dumps(good[1].to_json())]
    dead.write_bytes(b"\n".join(lines) + b"\n" + orjson.dumps(good[2].to_json()) + b"\n" + b'{"id": "cut sh')
    spill = SpillFile(tmp_path / "usage-spill.jsonl", 1 << 20)
    assert spill.candidates() == [dead]
    claim = spill.claim(dead)
    assert claim is not None and not claim.own
    rows, offset = spill.read(claim, 100)
    assert rows == good and claim.torn == 3 and claim.done
    spill.finish(claim)
    assert not dead.exists()
    spill.close()


def test_a_locked_file_is_not_claimed(tmp_path: Path) -> None:
    owner = SpillFile(tmp_path / "usage-spill.jsonl", 1 << 20)
    owner.append([row(1)])
    assert owner.path is not None
    other = SpillFile(tmp_path / "usage-spill.jsonl", 1 << 20)  # flock is per open file: like another process
    assert other.claim(owner.path) is None
    other.append([row(2)])  # the same pid is taken: another name
    assert other.path is not None and other.path != owner.path
    owner.close()
    claim = other.claim(owner.path)  # released: now claimable
    assert claim is not None
    other.release(claim)
    other.close()


def test_a_file_left_with_a_torn_line_gets_a_newline_before_new_rows(tmp_path: Path) -> None:
    mine = tmp_path / f"usage-spill-{os.getpid()}.jsonl"
    mine.write_bytes(b'{"torn')
    spill = SpillFile(tmp_path / "usage-spill.jsonl", 1 << 20)
    new = row(5)
    spill.append([new])
    assert spill.path == mine
    claim = spill.claim(mine)
    assert claim is not None
    rows, _ = spill.read(claim, 10)
    assert rows == [new] and claim.torn == 1
    spill.close()
