"""The vendor desk: maintenance plans, trade-in, trade-up, key transfer, Migrate and multi-site checks.

The simulator plays the vendor's side (docs/vendor.md): :class:`Desk` is the entry point a
scenario runner or the ``allworx-sim vendor|migrate|site`` commands call.
"""

from simulator.vendor.desk import Desk, default_desk_dir
from simulator.vendor.errors import DeskError, VendorRefusedError
from simulator.vendor.invoices import Invoice
from simulator.vendor.migrate import MigrateReport
from simulator.vendor.orders import Delivery, Order, Quote
from simulator.vendor.plans import PlanPurchase, PurchaseOption, Warranty, read_warranty
from simulator.vendor.site import MemberStatus, SiteReport
from simulator.vendor.tables import OrderType, PriceTables, default_tables

__all__ = [
    "Delivery",
    "Desk",
    "DeskError",
    "Invoice",
    "MemberStatus",
    "MigrateReport",
    "Order",
    "OrderType",
    "PlanPurchase",
    "PriceTables",
    "PurchaseOption",
    "Quote",
    "SiteReport",
    "VendorRefusedError",
    "Warranty",
    "default_desk_dir",
    "default_tables",
    "read_warranty",
]
