"""Token prices from litellm's bundled model map, read without importing litellm.

Dify expresses a price as ``unit_price`` per ``price_unit`` tokens; the gateway uses a
price unit of 0.000001 (prices per million tokens), as Dify's model providers do. Prices
are exact decimals, not rounded: a one-token call still shows its real cost.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

PRICE_UNIT = Decimal("0.000001")
_PER_MILLION = Decimal(1_000_000)
_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class Prices:
    input_per_token: Decimal
    output_per_token: Decimal
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    prices: Prices | None
    supports_response_schema: bool | None
    max_input_tokens: int | None


def decimal_str(value: Decimal) -> str:
    """A plain decimal string (never exponent notation, which strict parsers may reject)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def price(tokens: int, per_token: Decimal) -> tuple[str, str, str]:
    """(unit_price, price_unit, price) strings for ``tokens`` at ``per_token``."""
    unit_price = per_token * _PER_MILLION
    total = Decimal(tokens) * unit_price * PRICE_UNIT
    return decimal_str(unit_price), decimal_str(PRICE_UNIT), decimal_str(total)


class ModelMap:
    """Lazy lookup in litellm's model map JSON (loaded once, on first lookup)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._data: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, ModelInfo] = {}

    def _load(self) -> dict[str, Any]:
        with self._lock:
            if self._data is None:
                path = self._path or _bundled_map_path()
                try:
                    self._data = orjson.loads(path.read_bytes()) if path else {}
                except (OSError, orjson.JSONDecodeError):
                    self._data = {}
            return self._data

    def lookup(self, model: str) -> ModelInfo:
        """Info for a litellm model string such as ``openai/gpt-4o-mini``."""
        cached = self._cache.get(model)
        if cached is not None:
            return cached
        data = self._load()
        entry = data.get(model)
        if entry is None and "/" in model:
            entry = data.get(model.split("/", 1)[1])
        info = _info(entry if isinstance(entry, dict) else None)
        if len(self._cache) < 4096:
            self._cache[model] = info
        return info


def _info(entry: dict[str, Any] | None) -> ModelInfo:
    if entry is None:
        return ModelInfo(prices=None, supports_response_schema=None, max_input_tokens=None)
    prices = None
    if "input_cost_per_token" in entry or "output_cost_per_token" in entry:
        prices = Prices(
            input_per_token=Decimal(str(entry.get("input_cost_per_token") or 0)),
            output_per_token=Decimal(str(entry.get("output_cost_per_token") or 0)),
        )
    max_input = entry.get("max_input_tokens")
    return ModelInfo(
        prices=prices,
        supports_response_schema=entry.get("supports_response_schema"),
        max_input_tokens=max_input if isinstance(max_input, int) else None,
    )


def _bundled_map_path() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / _MAP_FILE
