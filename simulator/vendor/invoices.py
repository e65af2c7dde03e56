"""Returns and invoices of trade orders (rule TRADE-3).

Pure. The old server is due back within 30 days of the new one's receipt (the order day; the
30th day after it is still in time). After that the partner is invoiced the difference between
what was paid for the trade line and the full price of the new server, read as the new model's
list price (docs/vendor.md says why); the key transfer fee buys a separate service and is not
counted. A late return does not cancel a penalty already owed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from simulator.vendor.errors import DeskError
from simulator.vendor.orders import Order
from simulator.vendor.tables import OrderType

RETURN_DAYS = 30  # rule TRADE-3


def return_deadline(placed_at: datetime) -> date:
    """The last day the old server may be returned without penalty (rule TRADE-3)."""
    return placed_at.date() + timedelta(days=RETURN_DAYS)


def penalty_for(order: Order, today: date) -> int:
    """The penalty owed on ``today``: zero until the deadline passes without the old server (TRADE-3).

    The penalty is the new model's list price less what was paid for the trade line (the key
    transfer fee buys a separate service and is not counted), never negative.
    """
    returned = order.returned_at.date() if order.returned_at else None
    if returned is not None and returned <= order.return_deadline:
        return 0
    if returned is None and today <= order.return_deadline:
        return 0
    return max(0, order.full_price - order.partner_price)


def record_return(order: Order, now: datetime) -> Order:
    """Return the order with the old server received back at ``now`` (a late return keeps its penalty).

    Raises:
        DeskError: the old server was already returned, or ``now`` is before the order.
    """
    if order.returned_at is not None:
        raise DeskError(
            f"order {order.order_id}: the old server was already returned on "
            f"{order.returned_at.date().isoformat()}"
        )
    if now < order.placed_at:
        raise DeskError(
            f"order {order.order_id} was placed on {order.placed_at.isoformat()}, after {now.isoformat()}"
        )
    returned = replace(order, returned_at=now)
    return replace(returned, penalty=penalty_for(returned, now.date()))


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line of an invoice (whole dollars, partner prices)."""

    catalog_number: str | None
    description: str
    amount: int


@dataclass(frozen=True, slots=True)
class Invoice:
    """What the partner paid for an order and what is still due (the TRADE-3 penalty)."""

    order_id: str
    issued: date
    status: str  # "awaiting-return", "returned", "penalty"
    return_deadline: date
    returned_on: date | None
    lines: tuple[InvoiceLine, ...]
    paid: int
    penalty: int

    @property
    def due(self) -> int:
        """What the partner still owes."""
        return self.penalty

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "order_id": self.order_id,
            "issued": self.issued.isoformat(),
            "status": self.status,
            "return_deadline": self.return_deadline.isoformat(),
            "returned_on": self.returned_on.isoformat() if self.returned_on else None,
            "lines": [
                {"catalog_number": ln.catalog_number, "description": ln.description, "amount": ln.amount}
                for ln in self.lines
            ],
            "paid": self.paid,
            "penalty": self.penalty,
            "due": self.due,
        }


def make_invoice(order: Order, now: datetime) -> Invoice:
    """Invoice ``order`` at ``now``: its paid lines plus the penalty once it is owed (rule TRADE-3)."""
    what = "Trade-in" if order.order_type is OrderType.TRADE_IN else "Trade-up"
    lines = [
        InvoiceLine(
            order.catalog_number,
            f"{what} {order.old_model} for {order.new_model} (paid)",
            order.partner_price,
        )
    ]
    if order.key_transfer:
        lines.append(
            InvoiceLine(
                order.transfer_catalog_number, f"Key transfer to {order.new_model} (paid)", order.transfer_fee
            )
        )
    penalty = penalty_for(order, now.date())
    returned = order.returned_at.date() if order.returned_at else None
    if penalty:
        lines.append(
            InvoiceLine(
                None,
                f"Penalty (TRADE-3): old {order.old_model} {order.old_serial} not returned "
                f"by {order.return_deadline.isoformat()}: full price ${order.full_price:,} "
                f"less ${order.partner_price:,} paid",
                penalty,
            )
        )
        status = "penalty"
    else:
        status = "returned" if returned else "awaiting-return"
    return Invoice(
        order.order_id, now.date(), status, order.return_deadline, returned, tuple(lines), order.paid, penalty
    )
