"""Trade-in and trade-up orders: quotes and the keys the new server gets.

Pure: every function takes parsed inputs (schedules, catalogue, verified keys, ``now``) and returns
data; :mod:`simulator.vendor.desk` does the I/O.

Rules and readings (docs/vendor.md says why):

- TRADE-1 / TRADE-4: only the (old, new) pairs of the schedules, at their catalogue numbers and
  prices; anything else is ``TRADE_NOT_ELIGIBLE``; a non-functional server cannot be traded in
  (``SERVER_NOT_FUNCTIONAL``). The trade-in credit is 35% of the old model's list price; the
  schedule's price already accounts for it, so it is reported, never subtracted again.
- TRADE-2: nothing of the old server's warranties or maintenance keys reaches the new server.
- TRADE-4: a trade-up brings its schedule's free user key.
- XFER-1: with the transfer fee paid, the old server's valid feature keys are re-issued for the
  new serial, delivered 24 hours after the order. XFER-2: a model's built-in features (the 24x's
  T1) become feature keys. XFER-3: a user key sized to cover the old server's users (the more of
  its enabled users and its licensed users), capped at the new model's maximum.
- TRADE-3 (returns, penalties) lives in :mod:`simulator.vendor.invoices`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from agent.keys import KeyCheck, KeyKind, parse_users
from common.reasons import Reason, Refusal
from releases.catalog import Catalog
from simulator.vendor.tables import OrderType, PriceTables, TradeLine

TRADE_IN_VALUE_PERCENT = 35  # rule TRADE-1: a functional old server is valued at 35% of list
DELIVERY_DELAY = timedelta(hours=24)  # rule XFER-1: transferred keys appear within 24 hours


@dataclass(frozen=True, slots=True)
class Quote:
    """The price of a trade order, or the vendor's refusal (``refusal`` set, prices zero)."""

    order_type: OrderType
    old_model: str
    new_model: str
    key_transfer: bool
    refusal: Refusal | None = None
    catalog_number: str | None = None
    partner_price: int = 0  # whole dollars, the schedule's trade line
    msrp: int = 0
    credit: int = 0  # rule TRADE-1: 35% of the old model's list price (trade-in only), informative
    free_user_key: str | None = None  # rule TRADE-4
    transfer_catalog_number: str | None = None  # rule XFER-1
    transfer_fee: int = 0  # partner price of the key transfer
    transfer_fee_msrp: int = 0
    full_price: int = 0  # the new model's list price (rule TRADE-3's penalty basis)

    @property
    def total_partner(self) -> int:
        """What the partner pays: the trade line plus the optional transfer fee."""
        return self.partner_price + self.transfer_fee

    @property
    def total_msrp(self) -> int:
        """The same at MSRP."""
        return self.msrp + self.transfer_fee_msrp

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``refusal`` null when the order is eligible)."""
        return {
            "type": self.order_type.value,
            "old_model": self.old_model,
            "new_model": self.new_model,
            "key_transfer": self.key_transfer,
            "refusal": self.refusal.as_dict() if self.refusal else None,
            "catalog_number": self.catalog_number,
            "partner_price": self.partner_price,
            "msrp": self.msrp,
            "credit": self.credit,
            "free_user_key": self.free_user_key,
            "transfer_catalog_number": self.transfer_catalog_number,
            "transfer_fee": self.transfer_fee,
            "transfer_fee_msrp": self.transfer_fee_msrp,
            "total_partner": self.total_partner,
            "total_msrp": self.total_msrp,
            "full_price": self.full_price,
        }


def trade_in_credit(list_price: int) -> int:
    """Return 35% of ``list_price`` in whole dollars, rounded half up (rule TRADE-1)."""
    return (list_price * TRADE_IN_VALUE_PERCENT + 50) // 100


def _not_eligible(
    tables: PriceTables, catalog: Catalog, order_type: OrderType, old_model: str, new_model: str
) -> Refusal:
    rule = "TRADE-1" if order_type is OrderType.TRADE_IN else "TRADE-4"
    other = OrderType.TRADE_UP if order_type is OrderType.TRADE_IN else OrderType.TRADE_IN
    if tables.line(other, old_model, new_model) is not None:
        message = f"An Allworx {old_model} is not eligible for a {order_type.value}: order a {other.value}."
    elif old_model not in catalog.models or new_model not in catalog.models:
        message = (
            f"{old_model} -> {new_model} is not a pair of Allworx models in the {order_type.value} schedule."
        )
    else:
        allowed = tables.destinations(order_type, old_model)
        towards = ", ".join(allowed) if allowed else "no server"
        message = (
            f"An Allworx {old_model} is not eligible for a {order_type.value} towards a {new_model}: "
            f"the schedule allows {towards} only."
        )
    return Refusal(Reason.TRADE_NOT_ELIGIBLE, rule, message)


def make_quote(
    tables: PriceTables,
    catalog: Catalog,
    order_type: OrderType,
    old_model: str,
    new_model: str,
    *,
    key_transfer: bool = False,
    functional: bool = True,
) -> Quote:
    """Price a trade order from the schedules, or refuse it (rules TRADE-1, TRADE-4, XFER-1).

    Returns:
        A quote; an ineligible pair is ``TRADE_NOT_ELIGIBLE``, a non-functional trade-in
        ``SERVER_NOT_FUNCTIONAL`` (the refusal is data, the prices then zero).
    """
    base = Quote(order_type, old_model, new_model, key_transfer)
    line = tables.line(order_type, old_model, new_model)
    if line is None:
        return replace(base, refusal=_not_eligible(tables, catalog, order_type, old_model, new_model))
    if order_type is OrderType.TRADE_IN and not functional:  # rule TRADE-1
        return replace(
            base,
            refusal=Refusal(
                Reason.SERVER_NOT_FUNCTIONAL,
                "TRADE-1",
                f"Only a functional Allworx {old_model} can be traded in (it is valued at "
                f"{TRADE_IN_VALUE_PERCENT}% of its list price as long as it works).",
            ),
        )
    transfer = tables.transfer_for(new_model) if key_transfer else None
    credit = trade_in_credit(catalog.model(old_model).list_price) if order_type is OrderType.TRADE_IN else 0
    return replace(
        base,
        catalog_number=line.catalog_number,
        partner_price=line.partner,
        msrp=line.msrp,
        credit=credit,
        free_user_key=line.free_user_key,
        transfer_catalog_number=transfer.catalog_number if transfer else None,
        transfer_fee=transfer.partner if transfer else 0,
        transfer_fee_msrp=transfer.msrp if transfer else 0,
        full_price=catalog.model(new_model).list_price,
    )


# ---------------------------------------------------------------------------- keys for the new server


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A key the vendor issues for the new server, and why."""

    kind: KeyKind  # FEATURE or USERS
    source: str  # "free" (TRADE-4), "transfer" (XFER-1), "built-in" (XFER-2), "users" (XFER-3)
    feature: str | None = None
    users: str | None = None
    count: int = 1
    expires: date | None = None
    replaces: str | None = None  # the old server's key id, for a transferred key

    @property
    def what(self) -> str:
        """The feature name or user range."""
        return self.feature or self.users or ""


def user_key_for(catalog: Catalog, users: int, model: str) -> str | None:
    """Return the user range that covers ``users`` on ``model``, capped at its maximum (rule XFER-3).

    None when the base licence (``catalog.base_users``) already covers them.
    """
    limit = min(users, catalog.model(model).max_users)
    if limit <= catalog.base_users:
        return None
    for text in catalog.user_key_ranges:
        low, high = parse_users(text)
        if low <= limit <= high:
            return text
    return next((t for t in catalog.user_key_ranges if parse_users(t)[1] >= limit), None)


def _covers(grants: Sequence[KeyGrant], users: int) -> bool:
    return any(g.users is not None and parse_users(g.users)[1] >= users for g in grants)


def free_grants(line: TradeLine) -> tuple[KeyGrant, ...]:
    """The free user key a trade-up brings (rule TRADE-4)."""
    if line.free_user_key is None:
        return ()
    return (KeyGrant(KeyKind.USERS, "free", users=line.free_user_key),)


def transfer_grants(
    catalog: Catalog,
    builtin: Mapping[str, tuple[str, ...]],
    old_model: str,
    new_model: str,
    *,
    old_checks: Sequence[KeyCheck],
    existing_users: int,
    already: Sequence[KeyGrant] = (),
) -> tuple[KeyGrant, ...]:
    """The keys a paid key transfer puts on the new server (rules XFER-1, XFER-2, XFER-3).

    Valid feature keys move (same feature, count and expiry); maintenance keys and patch
    authorisations never do (TRADE-2); built-in features become keys; user keys are replaced by
    one sized for the old server's users, unless a key in ``already`` covers them.
    """
    grants: list[KeyGrant] = []
    for check in old_checks:
        info = check.info
        if check.valid and info is not None and info.kind is KeyKind.FEATURE and info.feature:
            grants.append(
                KeyGrant(
                    KeyKind.FEATURE,
                    "transfer",
                    feature=info.feature,
                    count=info.count,
                    expires=info.expires,
                    replaces=info.key_id,
                )
            )
    keyed = {g.feature for g in grants}
    for name in builtin.get(old_model, ()):  # rule XFER-2
        if name not in keyed:
            grants.append(KeyGrant(KeyKind.FEATURE, "built-in", feature=name))
    licensed = max(
        (
            parse_users(c.info.users)[1]
            for c in old_checks
            if c.valid and c.info is not None and c.info.kind is KeyKind.USERS and c.info.users
        ),
        default=0,
    )
    need = min(max(existing_users, licensed), catalog.model(new_model).max_users)  # rule XFER-3
    users = user_key_for(catalog, need, new_model)
    if users is not None and not _covers(already, need):
        grants.append(KeyGrant(KeyKind.USERS, "users", users=users))
    return tuple(grants)


# ---------------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class Delivery:
    """A key waiting on the vendor's Feature Key page for the new server (rule XFER-1)."""

    key_id: str
    kind: str
    what: str
    source: str
    available_at: datetime
    text: str
    delivered_at: datetime | None = None
    problem: str | None = None  # why the last delivery attempt failed, if it did

    def as_dict(self, *, with_text: bool = True) -> dict[str, Any]:
        """The JSON form (the key text is left out of summaries)."""
        out: dict[str, Any] = {
            "key_id": self.key_id,
            "kind": self.kind,
            "what": self.what,
            "source": self.source,
            "available_at": self.available_at.isoformat(),
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "problem": self.problem,
        }
        if with_text:
            out["text"] = self.text
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Delivery:
        """Parse the JSON form.

        Raises:
            KeyError, TypeError, ValueError: malformed.
        """
        delivered = raw.get("delivered_at")
        return cls(
            str(raw["key_id"]),
            str(raw["kind"]),
            str(raw["what"]),
            str(raw["source"]),
            datetime.fromisoformat(raw["available_at"]),
            str(raw["text"]),
            datetime.fromisoformat(delivered) if delivered else None,
            raw.get("problem"),
        )


@dataclass(frozen=True, slots=True)
class Order:
    """A placed trade order. Money in whole dollars; ``penalty`` is set once invoiced (TRADE-3)."""

    order_id: str
    order_type: OrderType
    catalog_number: str
    partner_price: int
    msrp: int
    credit: int
    full_price: int
    old_model: str
    old_serial: str
    old_server_dir: str
    new_model: str
    new_serial: str
    new_server_dir: str
    new_release: str
    placed_at: datetime
    return_deadline: date
    key_transfer: bool = False
    transfer_catalog_number: str | None = None
    transfer_fee: int = 0
    transfer_fee_msrp: int = 0
    free_user_key: str | None = None
    deliveries: tuple[Delivery, ...] = field(default=())
    returned_at: datetime | None = None
    penalty: int = 0

    @property
    def paid(self) -> int:
        """What the partner paid at order time (trade line plus transfer fee, partner prices)."""
        return self.partner_price + self.transfer_fee

    def as_dict(self, *, with_keys: bool = False) -> dict[str, Any]:
        """The JSON form (persisted with the key texts; printed without them)."""
        out: dict[str, Any] = {
            "order_id": self.order_id,
            "type": self.order_type.value,
            "catalog_number": self.catalog_number,
            "partner_price": self.partner_price,
            "msrp": self.msrp,
            "credit": self.credit,
            "full_price": self.full_price,
            "paid": self.paid,
            "old_model": self.old_model,
            "old_serial": self.old_serial,
            "old_server_dir": self.old_server_dir,
            "new_model": self.new_model,
            "new_serial": self.new_serial,
            "new_server_dir": self.new_server_dir,
            "new_release": self.new_release,
            "placed_at": self.placed_at.isoformat(),
            "return_deadline": self.return_deadline.isoformat(),
            "key_transfer": self.key_transfer,
            "transfer_catalog_number": self.transfer_catalog_number,
            "transfer_fee": self.transfer_fee,
            "transfer_fee_msrp": self.transfer_fee_msrp,
            "free_user_key": self.free_user_key,
            "deliveries": [d.as_dict(with_text=with_keys) for d in self.deliveries],
            "returned_at": self.returned_at.isoformat() if self.returned_at else None,
            "penalty": self.penalty,
        }
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Order:
        """Parse the persisted JSON form.

        Raises:
            KeyError, TypeError, ValueError: malformed.
        """
        returned = raw.get("returned_at")
        return cls(
            order_id=str(raw["order_id"]),
            order_type=OrderType(raw["type"]),
            catalog_number=str(raw["catalog_number"]),
            partner_price=int(raw["partner_price"]),
            msrp=int(raw["msrp"]),
            credit=int(raw["credit"]),
            full_price=int(raw["full_price"]),
            old_model=str(raw["old_model"]),
            old_serial=str(raw["old_serial"]),
            old_server_dir=str(raw["old_server_dir"]),
            new_model=str(raw["new_model"]),
            new_serial=str(raw["new_serial"]),
            new_server_dir=str(raw["new_server_dir"]),
            new_release=str(raw["new_release"]),
            placed_at=datetime.fromisoformat(raw["placed_at"]),
            return_deadline=date.fromisoformat(raw["return_deadline"]),
            key_transfer=bool(raw["key_transfer"]),
            transfer_catalog_number=raw.get("transfer_catalog_number"),
            transfer_fee=int(raw["transfer_fee"]),
            transfer_fee_msrp=int(raw["transfer_fee_msrp"]),
            free_user_key=raw.get("free_user_key"),
            deliveries=tuple(Delivery.from_dict(d) for d in raw.get("deliveries", [])),
            returned_at=datetime.fromisoformat(returned) if returned else None,
            penalty=int(raw["penalty"]),
        )
