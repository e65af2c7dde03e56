"""The vendor desk: the one object a scenario runner or the CLI talks to.

It holds the vendor's keyring, the catalogue, the price schedules and a state folder where
orders persist as JSON (``<state_dir>/orders/<order id>.json``), so an order placed by one
command can be returned or invoiced by a later one.

Key delivery (rule XFER-1) is explicit: an order's keys wait on the vendor's Feature Key page
(the order's ``deliveries``) with an ``available_at`` instant: the order itself for a trade-up's
free user key, the order plus 24 simulated hours for transferred keys. :meth:`Desk.deliver`
installs every key that is available at ``now`` on the new server; call it whenever simulated
time advances (the CLI calls it at the start of every command).

Invariants: an order is persisted before its side effects (the new server, its keys); delivery
is idempotent and resumable; a refused request changes nothing; writes are atomic and made under
a file lock, so concurrent commands on one desk do not lose updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from agent import database
from agent.clock import as_date
from agent.fileio import read_json, write_json
from agent.keys import KeyInfo, parse_key
from agent.store import ServerDir
from common.errors import StoreError
from common.reasons import Reason, Refusal
from releases.catalog import Catalog, default_catalog
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring, sim_home
from simulator.server import ServerSpec, create_server, serial_for
from simulator.vendor import migrate as migrate_mod
from simulator.vendor.errors import DeskError, VendorRefusedError
from simulator.vendor.invoices import Invoice, make_invoice, record_return, return_deadline
from simulator.vendor.migrate import MigrateReport
from simulator.vendor.orders import (
    DELIVERY_DELAY,
    Delivery,
    KeyGrant,
    Order,
    Quote,
    free_grants,
    make_quote,
    transfer_grants,
)
from simulator.vendor.plans import PlanPurchase, PurchaseOption, purchase, ship_warranty, write_warranty
from simulator.vendor.site import SiteReport, site_check
from simulator.vendor.tables import OrderType, PriceTables, default_tables


def default_desk_dir() -> Path:
    """Where the desk keeps its state by default: ``$ALLWORX_SIM_HOME/desk``."""
    return sim_home() / "desk"


def instant(now: datetime | date) -> datetime:
    """Return ``now`` as an aware datetime (a date means its midnight, UTC)."""
    if isinstance(now, datetime):
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def order_type(value: OrderType | str) -> OrderType:
    """Parse an order type.

    Raises:
        DeskError: neither ``trade-in`` nor ``trade-up``.
    """
    try:
        return OrderType(value)
    except ValueError:
        raise DeskError(f"unknown order type {value!r} (choose trade-in or trade-up)") from None


class Desk:
    """The vendor's desk: quotes, trade orders, key delivery, returns, invoices, plans, Migrate, sites."""

    def __init__(
        self,
        keyring: VendorKeyring,
        catalog: Catalog | None = None,
        state_dir: Path | None = None,
        tables: PriceTables | None = None,
    ) -> None:
        self.keyring = keyring
        self.catalog = catalog or default_catalog()
        self.state_dir = state_dir if state_dir is not None else default_desk_dir()
        self.tables = tables or default_tables()

    # --- orders ---------------------------------------------------------------------------
    def quote(
        self,
        kind: OrderType | str,
        old_model: str,
        new_model: str,
        *,
        key_transfer: bool = False,
        functional: bool = True,
    ) -> Quote:
        """Price a trade order; a refusal is data in the quote (rules TRADE-1, TRADE-4, XFER-1).

        Raises:
            DeskError: ``kind`` is not an order type.
        """
        return make_quote(
            self.tables,
            self.catalog,
            order_type(kind),
            old_model,
            new_model,
            key_transfer=key_transfer,
            functional=functional,
        )

    def order(
        self,
        kind: OrderType | str,
        old_server_dir: Path,
        new_model: str,
        *,
        now: datetime | date,
        new_server_dir: Path,
        key_transfer: bool = False,
        functional: bool = True,
    ) -> Order:
        """Place a trade order: the new server exists at once, on the newest release its model runs.

        The new server gets its own ship key and 12-month warranty, nothing of the old server's
        (TRADE-2); a trade-up's free user key is installed at once (TRADE-4); transferred keys
        become available 24 hours later (XFER-1, XFER-2, XFER-3), installed by :meth:`deliver`.

        Raises:
            VendorRefusedError: ``TRADE_NOT_ELIGIBLE`` (a pair not in the schedules, or a server
                already traded), ``SERVER_NOT_FUNCTIONAL``, or ``NOT_YET_RELEASED`` (no release
                for the new model yet).
            DeskError: bad order type, or ``new_server_dir`` is not empty.
            StoreError: the old server directory is missing or malformed.
        """
        moment = instant(now)
        old = ServerDir(Path(old_server_dir))
        ident = old.identity()
        quote = self.quote(kind, ident.model, new_model, key_transfer=key_transfer, functional=functional)
        if quote.refusal is not None:
            raise VendorRefusedError(quote.refusal)
        new_dir = Path(new_server_dir)
        if new_dir.exists() and any(new_dir.iterdir()):
            raise DeskError(f"{new_dir} is not empty; the new server needs a fresh directory")
        release = self._release_for(new_model, moment)
        grants = self._grants(quote, old, moment)
        with self._locked():
            self._check_not_traded(ident.serial)
            placed = self._build_order(
                quote=quote, old=old, new_dir=new_dir, release=release, moment=moment, grants=grants
            )
            self._save(placed)  # persist before acting
            try:
                self._make_server(placed, ident.site)
            except BaseException:
                self._path(placed.order_id).unlink(missing_ok=True)
                raise
        self.deliver(moment)
        return self.get(placed.order_id)

    def _release_for(self, new_model: str, moment: datetime) -> str:
        try:
            return self.catalog.newest_for(new_model, moment.date()).version
        except KeyError:
            day = moment.date().isoformat()
            raise VendorRefusedError(Refusal(Reason.NOT_YET_RELEASED, "REL-1", (
                f"No release for the Allworx {new_model} is published by {day}: "
                "the Connect servers ship with 8.0 or later."))) from None  # fmt: skip

    def _make_server(self, placed: Order, site: str) -> None:
        """Make the new server with its own ship key and 12-month warranty (SWM-4, TRADE-2)."""
        shipped = placed.placed_at.date()
        spec = ServerSpec(model=placed.new_model, release=placed.new_release, serial=placed.new_serial,
                          shipped=shipped, users=0, site=site)  # fmt: skip
        made = create_server(Path(placed.new_server_dir), spec, keyring=self.keyring, catalog=self.catalog)
        write_warranty(made, ship_warranty(shipped, origin=f"order {placed.order_id}"))

    def _grants(self, quote: Quote, old: ServerDir, moment: datetime) -> list[tuple[KeyGrant, datetime]]:
        line = self.tables.line(quote.order_type, quote.old_model, quote.new_model)
        if line is None:  # the quote was not refused, so the line exists: None is a bug
            raise RuntimeError(f"no schedule line for the accepted {quote.old_model} -> {quote.new_model}")
        now_grants = free_grants(line)  # rule TRADE-4
        out = [(g, moment) for g in now_grants]
        if quote.key_transfer:  # rules XFER-1, XFER-2, XFER-3
            users = database.user_count(old.db_path(old.active_slot()))
            later = transfer_grants(
                self.catalog,
                self.tables.builtin_features,
                quote.old_model,
                quote.new_model,
                old_checks=old.key_checks(moment.date()),
                existing_users=users,
                already=now_grants,
            )
            out += [(g, moment + DELIVERY_DELAY) for g in later]
        return out

    def _build_order(
        self,
        *,
        quote: Quote,
        old: ServerDir,
        new_dir: Path,
        release: str,
        moment: datetime,
        grants: Sequence[tuple[KeyGrant, datetime]],
    ) -> Order:
        order_id = f"ORD-{moment:%Y%m%d}-{secrets.token_hex(3).upper()}"
        serial = serial_for(str(new_dir.resolve()))
        deliveries = tuple(self._delivery(g, serial, moment, at) for g, at in grants)
        if quote.catalog_number is None:  # set on every unrefused quote: None is a bug
            raise RuntimeError("an accepted quote has no catalogue number")
        return Order(
            order_id=order_id,
            order_type=quote.order_type,
            catalog_number=quote.catalog_number,
            partner_price=quote.partner_price,
            msrp=quote.msrp,
            credit=quote.credit,
            full_price=quote.full_price,
            old_model=quote.old_model,
            old_serial=old.identity().serial,
            old_server_dir=str(old.root),
            new_model=quote.new_model,
            new_serial=serial,
            new_server_dir=str(new_dir),
            new_release=release,
            placed_at=moment,
            return_deadline=return_deadline(moment),
            key_transfer=quote.key_transfer,
            transfer_catalog_number=quote.transfer_catalog_number,
            transfer_fee=quote.transfer_fee,
            transfer_fee_msrp=quote.transfer_fee_msrp,
            free_user_key=quote.free_user_key,
            deliveries=deliveries,
        )

    def _delivery(self, grant: KeyGrant, serial: str, moment: datetime, available: datetime) -> Delivery:
        text = issue_key(
            self.keyring,
            serial=serial,
            kind=grant.kind,
            start=moment.date(),
            feature=grant.feature,
            users=grant.users,
            count=grant.count,
            expires=grant.expires,
            catalog=self.catalog,
        )
        info = parse_key(text).info
        return Delivery(info.key_id, grant.kind.value, grant.what, grant.source, available, text)

    def _check_not_traded(self, serial: str) -> None:
        for placed in self.orders():
            if placed.old_serial == serial:
                raise VendorRefusedError(
                    Refusal(
                        Reason.TRADE_NOT_ELIGIBLE,
                        "TRADE-1",
                        (
                            f"Server {serial} was already traded under order {placed.order_id} on "
                            f"{placed.placed_at.date().isoformat()}."
                        ),
                    )
                )

    def get(self, order_id: str) -> Order:
        """Return the order ``order_id``.

        Raises:
            DeskError: no such order, or its file is malformed.
        """
        path = self._path(order_id)
        if not path.is_file():
            raise DeskError(f"no order {order_id!r} at the desk {self.state_dir}")
        try:
            raw = read_json(path)
            if not isinstance(raw, dict):
                raise TypeError(f"a JSON {type(raw).__name__}, not an object")
            return Order.from_dict(raw)
        except (StoreError, KeyError, TypeError, ValueError) as exc:
            raise DeskError(f"{path} is not a readable order: {exc}") from exc

    def orders(self) -> list[Order]:
        """Every order placed at this desk, oldest first.

        Raises:
            DeskError: an order file is malformed.
        """
        folder = self.state_dir / "orders"
        found = [self.get(p.stem) for p in folder.glob("ORD-*.json")] if folder.is_dir() else []
        return sorted(found, key=lambda o: (o.placed_at, o.order_id))

    # --- delivery, returns, invoices --------------------------------------------------------
    def pending_deliveries(self, now: datetime | date | None = None) -> list[tuple[str, Delivery]]:
        """Keys not yet installed, as (order id, delivery); with ``now``, only those available by then.

        Raises:
            DeskError: an order file is malformed.
        """
        limit = instant(now) if now is not None else None
        return [
            (o.order_id, d)
            for o in self.orders()
            for d in o.deliveries
            if d.delivered_at is None and (limit is None or d.available_at <= limit)
        ]

    def deliver(self, now: datetime | date) -> list[Delivery]:
        """Install on the new servers every key available at ``now`` (rule XFER-1); return them.

        A key that cannot be installed (the new server's directory is gone) stays pending with
        its ``problem`` recorded.

        Raises:
            DeskError: an order file is malformed.
        """
        moment, done = instant(now), []
        with self._locked():
            for placed in self.orders():
                updated = [self._install(placed, d, moment) for d in placed.deliveries]
                if updated != list(placed.deliveries):
                    self._save(_with(placed, updated))
                    done += [d for d in updated if d.delivered_at == moment]
        return done

    @staticmethod
    def _install(placed: Order, delivery: Delivery, moment: datetime) -> Delivery:
        if delivery.delivered_at is not None or delivery.available_at > moment:
            return delivery
        try:
            check = ServerDir(Path(placed.new_server_dir)).install_key(delivery.text, moment.date())
        except StoreError as exc:
            return _delivered(delivery, None, str(exc))
        if not check.valid and check.reason is not Reason.KEY_NOT_YET_VALID:
            return _delivered(delivery, None, check.message)
        return _delivered(delivery, moment, None)

    def return_server(self, placed: Order | str, now: datetime | date) -> Order:
        """Record the old server's return (rule TRADE-3); a late return keeps the penalty.

        Raises:
            DeskError: unknown order, already returned, or ``now`` before the order.
        """
        with self._locked():
            current = self.get(placed if isinstance(placed, str) else placed.order_id)
            returned = record_return(current, instant(now))
            self._save(returned)
        return returned

    def invoice(self, placed: Order | str, now: datetime | date) -> Invoice:
        """Invoice an order at ``now``: paid lines, plus the penalty once the deadline has passed (TRADE-3).

        Raises:
            DeskError: unknown order.
        """
        with self._locked():
            current = self.get(placed if isinstance(placed, str) else placed.order_id)
            bill = make_invoice(current, instant(now))
            if bill.penalty != current.penalty:
                self._save(_penalised(current, bill.penalty))
        return bill

    # --- plans, Migrate, sites --------------------------------------------------------------
    def purchase(self, server_dir: Path, option: PurchaseOption | str, now: datetime | date) -> PlanPurchase:
        """Sell a warranty or maintenance plan for a server (rules SWM-4, SWM-5).

        Raises:
            VendorRefusedError: ``BUNDLE_WINDOW_CLOSED`` after the 90-day window.
            DeskError: unknown option.
            StoreError: not a server directory.
        """
        return purchase(self.keyring, Path(server_dir), option, now, self.catalog)

    def temporary_key(self, server_dir: Path, now: datetime | date, ceiling: str = "8.0") -> KeyInfo:
        """Issue the old server a temporary upgrade key up to ``ceiling`` (rule MIG-2).

        Raises:
            DeskError: the server already runs the ceiling or newer.
            KeyIssueError: ``ceiling`` is not a release.
            StoreError: not a server directory.
        """
        return migrate_mod.temporary_key(self.keyring, self.catalog, Path(server_dir), now, ceiling)

    def migrate(self, old_dir: Path, new_dir: Path, now: datetime | date) -> MigrateReport:
        """Run Migrate from the old server to the new one (rule MIG-1).

        Raises:
            VendorRefusedError: ``MIGRATE_REQUIRES_8_0``.
            DeskError: one server twice, or an upgrade in progress.
            StoreError, DatabaseError: a directory or database is missing or unreadable.
        """
        return migrate_mod.migrate(self.catalog, Path(old_dir), Path(new_dir), as_date(now))

    def site_check(
        self, server_dirs: Sequence[Path], now: datetime | date, target: str | None = None
    ) -> SiteReport:
        """Check a multi-site network (rule SITE-1).

        Raises:
            DeskError: no members, a member twice, or an unknown target.
            StoreError: a directory is not a server directory.
        """
        return site_check(self.catalog, [Path(d) for d in server_dirs], instant(now), target)

    # --- state ------------------------------------------------------------------------------
    def _path(self, order_id: str) -> Path:
        if not order_id.replace("-", "").isalnum():
            raise DeskError(f"{order_id!r} is not an order id")
        return self.state_dir / "orders" / f"{order_id}.json"

    def _save(self, placed: Order) -> None:
        self._path(placed.order_id).parent.mkdir(parents=True, exist_ok=True)
        write_json(self._path(placed.order_id), placed.as_dict(with_keys=True))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            handle = (self.state_dir / ".lock").open("a")
        except OSError as exc:
            raise StoreError(f"{self.state_dir}: cannot lock the desk: {exc.strerror}") from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _with(placed: Order, deliveries: list[Delivery]) -> Order:
    return replace(placed, deliveries=tuple(deliveries))


def _penalised(placed: Order, penalty: int) -> Order:
    return replace(placed, penalty=penalty)


def _delivered(delivery: Delivery, at: datetime | None, problem: str | None) -> Delivery:
    return replace(delivery, delivered_at=at, problem=problem)
