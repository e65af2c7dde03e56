"""The vendor's price schedules: trade-in, trade-up and key transfer, held as data.

The rows live in ``data/trade.toml``, copied entry for entry from the vendor's Trade in / Trade up
programme document. This module loads and validates them against the model table.

Invariants (checked on load, a broken file raises :class:`~common.errors.CatalogError` naming the
file, the entry and the problem): every model named exists; a trade-in goes from a legacy model
to a Connect model of equal or higher capacity (TRADE-1), a trade-up from a Connect model to a
higher-capacity Connect model (TRADE-4); each (old, new) pair appears once; every Connect model
has exactly one key-transfer line (XFER-1); prices are whole dollars, partner <= MSRP.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from agent.keys import parse_users
from common.errors import CatalogError
from releases.catalog import Catalog, default_catalog

TRADE_FILE = Path(__file__).resolve().parent / "data" / "trade.toml"


class OrderType(StrEnum):
    """The two kinds of order at the vendor desk."""

    TRADE_IN = "trade-in"  # rule TRADE-1
    TRADE_UP = "trade-up"  # rule TRADE-4


@dataclass(frozen=True, slots=True)
class TradeLine:
    """One row of the trade-in or trade-up schedule."""

    order_type: OrderType
    catalog_number: str
    old_model: str
    new_model: str
    partner: int  # whole dollars
    msrp: int  # whole dollars
    free_user_key: str | None = None  # trade-up only, e.g. "31-50" (rule TRADE-4)


@dataclass(frozen=True, slots=True)
class TransferLine:
    """One row of the key-transfer schedule (rule XFER-1)."""

    catalog_number: str
    destinations: tuple[str, ...]
    partner: int
    msrp: int


@dataclass(frozen=True)
class PriceTables:
    """The three schedules plus the built-in features that become keys on transfer (XFER-2)."""

    trade_in: tuple[TradeLine, ...]
    trade_up: tuple[TradeLine, ...]
    key_transfer: tuple[TransferLine, ...]
    builtin_features: Mapping[str, tuple[str, ...]]

    def line(self, order_type: OrderType, old_model: str, new_model: str) -> TradeLine | None:
        """Return the schedule row for trading ``old_model`` for ``new_model``, or None (not eligible)."""
        rows = self.trade_in if order_type is OrderType.TRADE_IN else self.trade_up
        return next((r for r in rows if (r.old_model, r.new_model) == (old_model, new_model)), None)

    def transfer_for(self, new_model: str) -> TransferLine | None:
        """Return the key-transfer fee line for a destination model, or None."""
        return next((t for t in self.key_transfer if new_model in t.destinations), None)

    def destinations(self, order_type: OrderType, old_model: str) -> tuple[str, ...]:
        """Return the models ``old_model`` may be traded for under ``order_type``."""
        rows = self.trade_in if order_type is OrderType.TRADE_IN else self.trade_up
        return tuple(r.new_model for r in rows if r.old_model == old_model)


def _field(entry: Mapping[str, Any], key: str, kind: type, file: str, label: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogError(file, label, f"field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _prices(entry: Mapping[str, Any], file: str, label: str) -> tuple[int, int]:
    partner = _field(entry, "partner", int, file, label)
    msrp = _field(entry, "msrp", int, file, label)
    if not 0 < partner <= msrp:
        raise CatalogError(file, label, f"prices must satisfy 0 < partner <= msrp, got {partner} and {msrp}")
    return partner, msrp


def _trade_line(order_type: OrderType, entry: Any, i: int, file: str, catalog: Catalog) -> TradeLine:
    label = f"{order_type.value.replace('-', '_')} #{i + 1}"
    if not isinstance(entry, dict):
        raise CatalogError(file, label, "must be a table")
    number = _field(entry, "catalog_number", str, file, label)
    label = f"{order_type.value} {number}"
    old, new = _field(entry, "old", str, file, label), _field(entry, "new", str, file, label)
    for name in (old, new):
        if name not in catalog.models:
            raise CatalogError(file, label, f"unknown model {name!r}")
    old_model, new_model = catalog.model(old), catalog.model(new)
    want_old = "legacy" if order_type is OrderType.TRADE_IN else "connect"
    if old_model.family != want_old or new_model.family != "connect":
        raise CatalogError(
            file, label, f"a {order_type.value} goes from a {want_old} model to a Connect model"
        )
    if new_model.capacity < old_model.capacity or (
        order_type is OrderType.TRADE_UP and new_model.capacity == old_model.capacity
    ):  # rules TRADE-1 (equal or higher), TRADE-4 (lower to higher)
        raise CatalogError(file, label, f"{old} -> {new} goes down in capacity")
    free = entry.get("free_user_key")
    if order_type is OrderType.TRADE_UP:
        free = _field(entry, "free_user_key", str, file, label)
        parse_users(free)
    elif free is not None:
        raise CatalogError(file, label, "only a trade-up carries a free user key")
    partner, msrp = _prices(entry, file, label)
    return TradeLine(order_type, number, old, new, partner, msrp, free)


def _transfer_line(entry: Any, i: int, file: str, catalog: Catalog) -> TransferLine:
    label = f"key_transfer #{i + 1}"
    if not isinstance(entry, dict):
        raise CatalogError(file, label, "must be a table")
    number = _field(entry, "catalog_number", str, file, label)
    label = f"key_transfer {number}"
    destinations = _field(entry, "to", list, file, label)
    for name in destinations:
        if not isinstance(name, str) or catalog.models.get(name) is None:
            raise CatalogError(file, label, f"unknown model {name!r}")
    partner, msrp = _prices(entry, file, label)
    return TransferLine(number, tuple(destinations), partner, msrp)


def _check_unique(tables: PriceTables, file: str, catalog: Catalog) -> None:
    numbers: set[str] = set()
    every = [r.catalog_number for r in (*tables.trade_in, *tables.trade_up)]
    every += [t.catalog_number for t in tables.key_transfer]
    for number in every:
        if number in numbers:
            raise CatalogError(file, number, "duplicate catalogue number")
        numbers.add(number)
    for rows in (tables.trade_in, tables.trade_up):
        pairs = [(r.old_model, r.new_model) for r in rows]
        if len(pairs) != len(set(pairs)):
            raise CatalogError(file, "(file)", "a trade pair appears twice")
    for model in (m for m in catalog.models.values() if m.family == "connect"):
        if sum(model.name in t.destinations for t in tables.key_transfer) != 1:
            raise CatalogError(file, "(file)", f"Connect {model.name} needs exactly one key-transfer line")


def load_tables(path: Path = TRADE_FILE, catalog: Catalog | None = None) -> PriceTables:
    """Load and validate the price schedules.

    Raises:
        CatalogError: the file is unreadable, not TOML, or an entry breaks an invariant.
    """
    catalog = catalog or default_catalog()
    file = str(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise CatalogError(file, "(file)", f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(file, "(file)", f"not valid TOML: {exc}") from exc
    builtin = raw.get("builtin_features", {})
    if not isinstance(builtin, dict) or not all(
        isinstance(v, list) and all(isinstance(f, str) for f in v) for v in builtin.values()
    ):
        raise CatalogError(file, "builtin_features", "must map a model to a list of feature names")
    tables = PriceTables(
        trade_in=tuple(
            _trade_line(OrderType.TRADE_IN, e, i, file, catalog)
            for i, e in enumerate(raw.get("trade_in", []))
        ),
        trade_up=tuple(
            _trade_line(OrderType.TRADE_UP, e, i, file, catalog)
            for i, e in enumerate(raw.get("trade_up", []))
        ),
        key_transfer=tuple(
            _transfer_line(e, i, file, catalog) for i, e in enumerate(raw.get("key_transfer", []))
        ),
        builtin_features={str(k): tuple(v) for k, v in builtin.items()},
    )
    _check_unique(tables, file, catalog)
    return tables


@cache
def default_tables() -> PriceTables:
    """Return the packaged price schedules (loaded once).

    Raises:
        CatalogError: the packaged data is broken.
    """
    return load_tables()
