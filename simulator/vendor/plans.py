"""Warranties and maintenance plans a partner buys for a server (rules SWM-4, SWM-5).

A server's warranty record lives in ``SERVER_DIR/warranty.json``: the purchase date of the server,
the end of its hardware warranty and every plan bought for it. A server without the file is a
server as shipped: purchased on its ship date with a 12-month hardware warranty (SWM-4).

Rules:

- SWM-4: a new server ships with a 12-month hardware warranty (and its 90-day ship key, which
  :func:`simulator.issuer.ship_key` issues);
- SWM-5: within 90 days of purchase (days elapsed <= 90, the same inclusive count as the ship
  key's), the 5-year extended hardware warranty alone (``hw-5y``) or the bundle of 5-year hardware
  warranty and 5-year maintenance (``bundle-5y``), both running five years from the purchase;
  after that only the 1-year anytime licence (``anytime-1y``), which starts the day it is bought
  (never back-dated: one licence is enough however long the server has been in service). The
  anytime licence can be bought at any time, as its name says.

Invariants: the pure half (:func:`judge_purchase`, :func:`options_on`, :func:`after_purchase`)
never touches files; :func:`purchase` verifies the key it issues on the server before it records
anything, and writes the record atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.clock import as_date
from agent.fileio import read_json, write_json
from agent.keys import KeyKind, Plan, parse_key
from agent.store import ServerDir
from common.errors import StoreError
from common.reasons import Reason, Refusal
from releases.catalog import Catalog, default_catalog
from simulator.issuer import add_years, issue_key
from simulator.keyring import VendorKeyring
from simulator.vendor.errors import DeskError, VendorRefusedError

WARRANTY_FILE = "warranty.json"
WINDOW_DAYS = 90  # rule SWM-5: the purchase window, days elapsed since purchase (inclusive)
SHIP_WARRANTY_YEARS = 1  # rule SWM-4: 12 months
EXTENDED_YEARS = 5  # rule SWM-5


class PurchaseOption(StrEnum):
    """What a partner can buy for a server (rule SWM-5)."""

    HW_5Y = "hw-5y"
    BUNDLE_5Y = "bundle-5y"
    ANYTIME_1Y = "anytime-1y"


@dataclass(frozen=True, slots=True)
class PlanPurchase:
    """One plan bought for a server."""

    option: PurchaseOption
    bought: date
    hardware_until: date | None = None
    key_id: str | None = None
    key_starts: date | None = None
    key_expires: date | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (dates ISO, absent values null)."""
        return {
            "option": self.option.value,
            "bought": self.bought.isoformat(),
            "hardware_until": _iso(self.hardware_until),
            "key_id": self.key_id,
            "key_starts": _iso(self.key_starts),
            "key_expires": _iso(self.key_expires),
        }


@dataclass(frozen=True, slots=True)
class Warranty:
    """A server's warranty record (``warranty.json``)."""

    purchased: date
    hardware_until: date
    purchases: tuple[PlanPurchase, ...] = ()
    origin: str = "ship"  # "ship", or "order <id>" for a server from a trade order

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to ``warranty.json``."""
        return {
            "purchased": self.purchased.isoformat(),
            "hardware_until": self.hardware_until.isoformat(),
            "purchases": [p.as_dict() for p in self.purchases],
            "origin": self.origin,
        }


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else None


# ---------------------------------------------------------------------------- pure rules


def ship_warranty(shipped: date, origin: str = "ship") -> Warranty:
    """Return the warranty a server ships with: 12 months of hardware warranty (rule SWM-4)."""
    return Warranty(shipped, add_years(shipped, SHIP_WARRANTY_YEARS), (), origin)


def days_since_purchase(purchased: date, today: date) -> int:
    """Return how many days have elapsed since the purchase (0 on the day itself)."""
    return (today - purchased).days


def options_on(purchased: date, today: date) -> tuple[PurchaseOption, ...]:
    """Return the options on sale for a server purchased on ``purchased`` (rule SWM-5)."""
    if days_since_purchase(purchased, today) <= WINDOW_DAYS:
        return (PurchaseOption.HW_5Y, PurchaseOption.BUNDLE_5Y, PurchaseOption.ANYTIME_1Y)
    return (PurchaseOption.ANYTIME_1Y,)


def judge_purchase(option: PurchaseOption, purchased: date, today: date) -> Refusal | None:
    """Return why ``option`` cannot be bought today, or None (rule SWM-5)."""
    if today < purchased:
        return Refusal(
            Reason.BAD_INPUT, "SWM-5", f"The server was not purchased until {purchased.isoformat()}."
        )
    if option in options_on(purchased, today):
        return None
    what = "bundle of 5-year hardware warranty and 5-year maintenance"
    if option is PurchaseOption.HW_5Y:
        what = "5-year extended hardware warranty"
    day = days_since_purchase(purchased, today)
    return Refusal(
        Reason.BUNDLE_WINDOW_CLOSED,
        "SWM-5",
        f"The {what} is sold only within {WINDOW_DAYS} days of purchase ({purchased.isoformat()}); "
        f"this is day {day}: buy the 1-year anytime licence instead.",
    )


def key_term(option: PurchaseOption, purchased: date, today: date) -> tuple[Plan, date, date] | None:
    """Return the maintenance key ``option`` brings (plan, starts, expires), or None (hardware only)."""
    if option is PurchaseOption.BUNDLE_5Y:  # runs with the hardware warranty, from purchase
        return Plan.BUNDLE_5Y, purchased, add_years(purchased, EXTENDED_YEARS)
    if option is PurchaseOption.ANYTIME_1Y:  # rule SWM-5: from the day it is bought, never back-dated
        return Plan.ANYTIME_1Y, today, add_years(today, 1)
    return None


def after_purchase(warranty: Warranty, bought: PlanPurchase) -> Warranty:
    """Return the warranty record once ``bought`` is added (a 5-year option extends the hardware)."""
    hardware = warranty.hardware_until
    if bought.hardware_until is not None:
        hardware = max(hardware, bought.hardware_until)
    return replace(warranty, hardware_until=hardware, purchases=(*warranty.purchases, bought))


# ---------------------------------------------------------------------------- server records


def read_warranty(server: ServerDir) -> Warranty:
    """Return the server's warranty record (as shipped when it has none).

    Raises:
        StoreError: not a server directory, or a malformed ``warranty.json``.
    """
    path = server.root / WARRANTY_FILE
    if not path.exists():
        return ship_warranty(server.identity().shipped)
    raw = read_json(path)
    try:
        purchases = tuple(
            PlanPurchase(
                option=PurchaseOption(p["option"]),
                bought=date.fromisoformat(p["bought"]),
                hardware_until=_day(p.get("hardware_until")),
                key_id=p.get("key_id"),
                key_starts=_day(p.get("key_starts")),
                key_expires=_day(p.get("key_expires")),
            )
            for p in raw.get("purchases", [])
        )
        return Warranty(
            date.fromisoformat(raw["purchased"]),
            date.fromisoformat(raw["hardware_until"]),
            purchases,
            str(raw.get("origin", "ship")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"{path} is malformed: {exc}") from exc


def write_warranty(server: ServerDir, warranty: Warranty) -> None:
    """Write the server's warranty record atomically.

    Raises:
        StoreError: the disk refused.
    """
    write_json(server.root / WARRANTY_FILE, warranty.as_dict())


def purchase(
    keyring: VendorKeyring,
    server_dir: Path,
    option: PurchaseOption | str,
    now: datetime | date,
    catalog: Catalog | None = None,
) -> PlanPurchase:
    """Sell ``option`` for the server at ``server_dir``: record it and install its maintenance key.

    Raises:
        VendorRefusedError: ``BUNDLE_WINDOW_CLOSED`` (rule SWM-5) or a purchase before the server's.
        DeskError: ``option`` is not an option.
        StoreError: not a server directory, or its records cannot be read or written.
    """
    try:
        chosen = PurchaseOption(option)
    except ValueError:
        choices = ", ".join(o.value for o in PurchaseOption)
        raise DeskError(f"unknown option {option!r} (choose from {choices})") from None
    server, today = ServerDir(server_dir), as_date(now)
    warranty = read_warranty(server)
    refusal = judge_purchase(chosen, warranty.purchased, today)
    if refusal is not None:
        raise VendorRefusedError(refusal)
    hardware = None
    if chosen in (PurchaseOption.HW_5Y, PurchaseOption.BUNDLE_5Y):
        hardware = add_years(warranty.purchased, EXTENDED_YEARS)
    bought = PlanPurchase(chosen, today, hardware_until=hardware)
    term = key_term(chosen, warranty.purchased, today)
    if term is not None:
        plan, starts, expires = term
        text = issue_key(
            keyring,
            serial=server.identity().serial,
            kind=KeyKind.MAINTENANCE,
            plan=plan,
            start=starts,
            expires=expires,
            issued=today,
            catalog=catalog or default_catalog(),
        )
        check = server.install_key(text, today)
        if not check.valid:
            raise StoreError(f"the {plan.value} key did not verify on the server: {check.message}")
        info = parse_key(text).info
        bought = replace(bought, key_id=info.key_id, key_starts=info.starts, key_expires=info.expires)
    write_warranty(server, after_purchase(warranty, bought))
    return bought
