"""Trade-in and trade-up orders: quotes, keys for the new server, delivery, returns and penalties.

Rules TRADE-1..4 and XFER-1..3, pure first, then through the desk on small virtual servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agent.keys import KeyCheck, KeyInfo, KeyKind, Plan
from agent.store import ServerDir
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from simulator.vendor import Desk, DeskError, OrderType, VendorRefusedError, default_tables, read_warranty
from simulator.vendor.invoices import penalty_for, record_return
from simulator.vendor.orders import make_quote, transfer_grants, user_key_for

CATALOG = default_catalog()
TABLES = default_tables()
ORDER_DAY = datetime(2016, 1, 11, 9, 30, tzinfo=UTC)
SERIAL = "AWX000000042"


def quote(kind: OrderType, old: str, new: str, **kw: bool):  # type: ignore[no-untyped-def]
    return make_quote(TABLES, CATALOG, kind, old, new, **kw)


def feature_key(name: str, *, valid: bool = True) -> KeyCheck:
    return KeyCheck(
        KeyInfo(f"FEA-{name}", KeyKind.FEATURE, SERIAL, date(2014, 1, 1), feature=name, count=2), valid
    )


def user_key(users: str) -> KeyCheck:
    return KeyCheck(KeyInfo(f"USR-{users}", KeyKind.USERS, SERIAL, date(2014, 1, 1), users=users), True)


def maintenance_key() -> KeyCheck:
    return KeyCheck(
        KeyInfo(
            "MNT-1",
            KeyKind.MAINTENANCE,
            SERIAL,
            date(2015, 1, 1),
            date(2015, 1, 1),
            date(2020, 1, 1),
            plan=Plan.BUNDLE_5Y,
        ),
        True,
    )


# ---------------------------------------------------------------------------- quotes (pure)


@dataclass(frozen=True)
class Priced:
    kind: OrderType
    old: str
    new: str
    number: str
    partner: int
    msrp: int


PRICED = [
    Priced(OrderType.TRADE_IN, "6x12", "320", "8010751", 459, 781),
    Priced(OrderType.TRADE_IN, "6x", "731", "8010763", 1234, 2620),
    Priced(OrderType.TRADE_IN, "24x", "731", "8010779", 927, 1855),
    Priced(OrderType.TRADE_UP, "320", "731", "8010703", 1350, 2700),
    Priced(OrderType.TRADE_UP, "536", "731", "8010708", 1350, 2700),
]


@pytest.mark.parametrize("case", PRICED, ids=lambda c: f"{c.kind}-{c.old}-{c.new}")
def test_trade_1_trade_4_a_quote_carries_the_schedule_line(case: Priced) -> None:
    """A quote names the schedule's catalogue number, partner price and MSRP for its pair."""
    got = quote(case.kind, case.old, case.new)
    assert got.refusal is None
    assert (got.catalog_number, got.partner_price, got.msrp) == (case.number, case.partner, case.msrp)


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [
        (OrderType.TRADE_IN, "6x", "320"),  # lower capacity
        (OrderType.TRADE_IN, "24x", "536"),
        (OrderType.TRADE_IN, "320", "530"),  # a Connect server is traded up, not in
        (OrderType.TRADE_UP, "731", "530"),  # down
        (OrderType.TRADE_UP, "320", "324"),  # same capacity: not in the table
        (OrderType.TRADE_UP, "6x", "731"),  # a legacy server is traded in, not up
        (OrderType.TRADE_IN, "6x", "7xx"),  # no such model
    ],
)
def test_trade_1_trade_4_a_pair_not_in_the_tables_is_refused(kind: OrderType, old: str, new: str) -> None:
    """Any pair outside the schedules is refused with TRADE_NOT_ELIGIBLE and priced at nothing."""
    got = quote(kind, old, new)
    assert got.refusal is not None and got.refusal.reason is Reason.TRADE_NOT_ELIGIBLE
    assert got.refusal.rule == ("TRADE-1" if kind is OrderType.TRADE_IN else "TRADE-4")
    assert (got.catalog_number, got.partner_price) == (None, 0)


def test_trade_1_a_non_functional_server_cannot_be_traded_in() -> None:
    """A trade-in of a server that does not work is refused with SERVER_NOT_FUNCTIONAL."""
    got = quote(OrderType.TRADE_IN, "6x", "530", functional=False)
    assert got.refusal is not None
    assert (got.refusal.reason, got.refusal.rule) == (Reason.SERVER_NOT_FUNCTIONAL, "TRADE-1")


def test_trade_1_the_credit_is_35_percent_of_the_old_list_price_and_not_subtracted_again() -> None:
    """A 24x (list $5,200) is valued at $1,820; the partner still pays the schedule's $927."""
    got = quote(OrderType.TRADE_IN, "24x", "731")
    assert got.credit == 1820 == CATALOG.model("24x").list_price * 35 // 100
    assert got.total_partner == 927 and got.total_msrp == 1855
    assert quote(OrderType.TRADE_UP, "530", "731").credit == 0


@pytest.mark.parametrize(
    ("old", "new", "free"), [("320", "530", "31-50"), ("324", "731", "31-50"), ("530", "731", "51-100")]
)
def test_trade_4_a_trade_up_brings_its_free_user_key(old: str, new: str, free: str) -> None:
    """Each trade-up line carries the free user key its schedule row names."""
    assert quote(OrderType.TRADE_UP, old, new).free_user_key == free
    assert quote(OrderType.TRADE_IN, "6x", "530").free_user_key is None


@pytest.mark.parametrize(
    ("kind", "old", "new", "number", "partner", "msrp"),
    [
        (OrderType.TRADE_IN, "6x12", "324", "8000010", 250, 500),
        (OrderType.TRADE_UP, "320", "536", "8000020", 250, 500),
        (OrderType.TRADE_IN, "48x", "731", "8000030", 500, 1000),
    ],
)
def test_xfer_1_the_transfer_fee_depends_on_the_destination(
    kind: OrderType, old: str, new: str, number: str, partner: int, msrp: int
) -> None:
    """The optional key transfer adds the destination's fee line; without it nothing is added."""
    got = quote(kind, old, new, key_transfer=True)
    assert (got.transfer_catalog_number, got.transfer_fee, got.transfer_fee_msrp) == (number, partner, msrp)
    assert got.total_partner == got.partner_price + partner
    plain = quote(kind, old, new)
    assert (plain.transfer_catalog_number, plain.transfer_fee, plain.total_partner) == (
        None,
        0,
        plain.partner_price,
    )


# ---------------------------------------------------------------------------- keys for the new server (pure)


def grants(old: str, new: str, checks: list[KeyCheck], users: int):  # type: ignore[no-untyped-def]
    return transfer_grants(
        CATALOG, TABLES.builtin_features, old, new, old_checks=checks, existing_users=users
    )


def test_xfer_2_a_24x_built_in_t1_becomes_a_t1_key_for_the_731() -> None:
    """With the transfer paid, a 24x (T1 built in) gets a T1 feature key on its 731; a 48x does not."""
    assert [(g.kind, g.feature, g.source) for g in grants("24x", "731", [], 10)] == [
        (KeyKind.FEATURE, "T1", "built-in")
    ]
    assert grants("48x", "731", [], 10) == ()


def test_xfer_1_valid_feature_keys_move_and_maintenance_keys_do_not() -> None:
    """Valid feature keys are re-issued with their count; invalid and maintenance keys stay (TRADE-2)."""
    checks = [feature_key("Call Assistant"), feature_key("ACD", valid=False), maintenance_key()]
    got = grants("6x", "731", checks, 10)
    assert [(g.feature, g.count, g.replaces) for g in got] == [("Call Assistant", 2, "FEA-Call Assistant")]


def test_xfer_3_a_6x_with_60_user_keys_gets_a_51_100_user_key_on_the_731() -> None:
    """Seed example: 60 licensed users on a 6x become a 51-100 user key on the new 731."""
    got = grants("6x", "731", [user_key("31-60")], 60)
    assert [(g.kind, g.users, g.source) for g in got] == [(KeyKind.USERS, "51-100", "users")]


@pytest.mark.parametrize(
    ("users", "model", "expected"),
    [
        (20, "731", None),
        (30, "731", None),
        (31, "731", "31-50"),
        (60, "731", "51-100"),
        (250, "731", "101-250"),
        (180, "530", "51-100"),  # capped at the 530's maximum
    ],
)
def test_xfer_3_user_keys_cover_the_users_up_to_the_new_maximum(
    users: int, model: str, expected: str | None
) -> None:
    """The user key covers the existing users, barring excess of the new model's maximum."""
    assert user_key_for(CATALOG, users, model) == expected


def test_xfer_3_no_extra_user_key_when_the_free_one_covers() -> None:
    """A 530 with 45 users traded up to a 731 keeps just its free 51-100 key."""
    free = quote(OrderType.TRADE_UP, "530", "731").free_user_key
    assert free == "51-100"
    from simulator.vendor.orders import free_grants

    line = TABLES.line(OrderType.TRADE_UP, "530", "731")
    assert line is not None
    extra = transfer_grants(
        CATALOG,
        TABLES.builtin_features,
        "530",
        "731",
        old_checks=[],
        existing_users=45,
        already=free_grants(line),
    )
    assert extra == ()


# ---------------------------------------------------------------------------- through the desk


@pytest.fixture
def desk(tmp_path: Path, keyring: VendorKeyring) -> Desk:
    return Desk(keyring, CATALOG, tmp_path / "desk")


def old_server(
    tmp_path: Path, keyring: VendorKeyring, model: str, users: int, release: str = "8.0"
) -> ServerDir:
    spec = ServerSpec(model=model, release=release, shipped=date(2012, 5, 1), users=users)
    return create_server(tmp_path / f"old-{model}", spec, keyring=keyring)


def test_xfer_2_seed_example_a_24x_traded_for_a_731_with_key_transfer_gets_a_t1_key(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Seed example end to end: the new 731 holds a valid T1 key for its own serial once delivered."""
    old = old_server(tmp_path, keyring, "24x", 12)
    placed = desk.order(
        "trade-in", old.root, "731", now=ORDER_DAY, new_server_dir=tmp_path / "new", key_transfer=True
    )
    desk.deliver(ORDER_DAY + timedelta(hours=24))
    new = ServerDir(tmp_path / "new")
    features = {
        c.info.feature for c in new.key_checks(ORDER_DAY.date()) if c.valid and c.info and c.info.feature
    }
    assert features == {"T1"}
    assert placed.transfer_catalog_number == "8000030" and placed.paid == 927 + 500


def test_xfer_2_without_the_transfer_fee_there_is_no_t1_key(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Without the key transfer the 731 gets no T1 key (the partner would buy one)."""
    old = old_server(tmp_path, keyring, "24x", 12)
    placed = desk.order("trade-in", old.root, "731", now=ORDER_DAY, new_server_dir=tmp_path / "new")
    desk.deliver(ORDER_DAY + timedelta(days=2))
    assert placed.deliveries == ()
    kinds = {c.info.kind for c in ServerDir(tmp_path / "new").key_checks(ORDER_DAY.date()) if c.info}
    assert kinds == {KeyKind.MAINTENANCE}


def test_xfer_3_seed_example_a_6x_with_60_user_keys_traded_for_a_731_gets_a_51_100_key(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Seed example end to end: 60 users and a 60-user key on a 6x give the 731 a 51-100 user key."""
    old = old_server(tmp_path, keyring, "6x", 60)
    old.install_key(
        issue_key(keyring, serial=old.identity().serial, kind="users", users="31-60", start=date(2013, 1, 1)),
        date(2013, 1, 1),
    )
    desk.order("trade-in", old.root, "731", now=ORDER_DAY, new_server_dir=tmp_path / "new", key_transfer=True)
    desk.deliver(ORDER_DAY + timedelta(hours=24))
    users = [
        c.info.users
        for c in ServerDir(tmp_path / "new").key_checks(ORDER_DAY.date())
        if c.valid and c.info and c.info.kind is KeyKind.USERS
    ]
    assert users == ["51-100"]


def test_xfer_1_transferred_keys_appear_24_hours_after_the_order(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """At 23 hours the keys are pending and absent from the new server; at 24 hours they are installed."""
    old = old_server(tmp_path, keyring, "24x", 40)
    placed = desk.order(
        "trade-in", old.root, "731", now=ORDER_DAY, new_server_dir=tmp_path / "new", key_transfer=True
    )
    new = ServerDir(tmp_path / "new")
    assert {d.available_at for d in placed.deliveries} == {ORDER_DAY + timedelta(hours=24)}
    assert desk.deliver(ORDER_DAY + timedelta(hours=23)) == []
    assert len(desk.pending_deliveries()) == 2 and len(new.installed_keys()) == 1
    delivered = desk.deliver(ORDER_DAY + timedelta(hours=24))
    assert sorted(d.what for d in delivered) == ["31-50", "T1"]
    assert desk.pending_deliveries() == [] and len(new.installed_keys()) == 3
    assert all(d.delivered_at is not None for d in desk.get(placed.order_id).deliveries)


def test_trade_2_warranties_and_maintenance_never_transfer(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """The new server has its own 12-month warranty and ship key only, whatever the old server had."""
    spec = ServerSpec(model="6x", release="8.0", shipped=date(2015, 10, 1), users=5)
    old = create_server(tmp_path / "old", spec, keyring=keyring)
    desk.purchase(old.root, "bundle-5y", date(2015, 10, 20))
    placed = desk.order(
        "trade-in", old.root, "731", now=ORDER_DAY, new_server_dir=tmp_path / "new", key_transfer=True
    )
    desk.deliver(ORDER_DAY + timedelta(days=1))
    new = ServerDir(tmp_path / "new")
    warranty = read_warranty(new)
    assert (warranty.purchased, warranty.hardware_until, warranty.purchases) == (
        ORDER_DAY.date(),
        date(2017, 1, 11),
        (),
    )
    assert warranty.origin == f"order {placed.order_id}"
    plans = [(c.info.plan, c.info.starts) for c in new.key_checks(ORDER_DAY.date()) if c.info and c.info.plan]
    assert plans == [(Plan.SHIP_90D, ORDER_DAY.date())]
    assert new.identity().serial != old.identity().serial
    assert read_warranty(old).hardware_until == date(2020, 10, 1)


def test_trade_4_a_trade_up_installs_its_free_user_key_with_the_new_server(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """A 320 traded up to a 530 arrives on the newest release a 530 runs, with its free 31-50 key."""
    old = old_server(tmp_path, keyring, "320", 10)
    placed = desk.order(
        OrderType.TRADE_UP, old.root, "530", now=date(2017, 3, 1), new_server_dir=tmp_path / "new"
    )
    new = ServerDir(tmp_path / "new")
    assert (
        placed.new_release == new.committed().version == CATALOG.newest_for("530", date(2017, 3, 1)).version
    )
    users = [c.info.users for c in new.key_checks(date(2017, 3, 1)) if c.valid and c.info and c.info.users]
    assert users == ["31-50"] and placed.credit == 0 and placed.catalog_number == "8010701"


def test_trade_1_a_refused_order_makes_nothing(tmp_path: Path, keyring: VendorKeyring, desk: Desk) -> None:
    """A non-functional trade-in is refused: no new server, no order on file."""
    old = old_server(tmp_path, keyring, "6x", 5)
    with pytest.raises(VendorRefusedError) as refused:
        desk.order(
            "trade-in", old.root, "530", now=ORDER_DAY, new_server_dir=tmp_path / "new", functional=False
        )
    assert refused.value.reason is Reason.SERVER_NOT_FUNCTIONAL
    assert not (tmp_path / "new").exists() and desk.orders() == []


def test_trade_1_a_server_is_traded_only_once(tmp_path: Path, keyring: VendorKeyring, desk: Desk) -> None:
    """A second order on the same old server is refused with TRADE_NOT_ELIGIBLE."""
    old = old_server(tmp_path, keyring, "6x", 5)
    desk.order("trade-in", old.root, "530", now=ORDER_DAY, new_server_dir=tmp_path / "new")
    with pytest.raises(VendorRefusedError) as refused:
        desk.order("trade-in", old.root, "536", now=ORDER_DAY, new_server_dir=tmp_path / "other")
    assert refused.value.reason is Reason.TRADE_NOT_ELIGIBLE and not (tmp_path / "other").exists()


def test_trade_1_no_connect_server_before_8_0_exists(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """An order dated before 8.0's release finds no release for the new model and is refused."""
    old = old_server(tmp_path, keyring, "6x", 5, release="7.6")
    with pytest.raises(VendorRefusedError) as refused:
        desk.order("trade-in", old.root, "530", now=date(2014, 1, 1), new_server_dir=tmp_path / "new")
    assert refused.value.reason is Reason.NOT_YET_RELEASED


# ---------------------------------------------------------------------------- returns and penalties


def placed_24x(tmp_path: Path, keyring: VendorKeyring, desk: Desk):  # type: ignore[no-untyped-def]
    old = old_server(tmp_path, keyring, "24x", 5)
    return desk.order(
        "trade-in", old.root, "731", now=ORDER_DAY, new_server_dir=tmp_path / "new", key_transfer=True
    )


def test_trade_3_returned_on_day_30_owes_nothing(tmp_path: Path, keyring: VendorKeyring, desk: Desk) -> None:
    """The old server returned on the 30th day after receipt leaves nothing due, even invoiced later."""
    placed = placed_24x(tmp_path, keyring, desk)
    assert placed.return_deadline == date(2016, 2, 10)
    desk.return_server(placed, ORDER_DAY + timedelta(days=30))
    bill = desk.invoice(placed.order_id, ORDER_DAY + timedelta(days=90))
    assert (bill.status, bill.penalty, bill.due, bill.paid) == ("returned", 0, 0, 927 + 500)


def test_trade_3_not_returned_after_30_days_is_invoiced_the_difference_to_full_price(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """On day 31 without the old server the partner owes the 731's list price less the $927 paid."""
    placed = placed_24x(tmp_path, keyring, desk)
    assert desk.invoice(placed, ORDER_DAY + timedelta(days=30)).due == 0
    bill = desk.invoice(placed, ORDER_DAY + timedelta(days=31))
    assert bill.status == "penalty" and bill.penalty == CATALOG.model("731").list_price - 927 == 3072
    assert bill.lines[-1].amount == 3072 and "TRADE-3" in bill.lines[-1].description
    assert desk.get(placed.order_id).penalty == 3072


def test_trade_3_a_late_return_keeps_the_penalty_and_a_second_return_is_an_error(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Returned on day 40 the penalty stands; returning it again is a desk error."""
    placed = placed_24x(tmp_path, keyring, desk)
    returned = desk.return_server(placed.order_id, ORDER_DAY + timedelta(days=40))
    assert returned.penalty == 3072
    with pytest.raises(DeskError):
        desk.return_server(placed.order_id, ORDER_DAY + timedelta(days=41))


def test_trade_3_penalty_rule_pure() -> None:
    """The pure rule: nothing due before the deadline or after an in-time return; the difference otherwise."""
    from simulator.vendor.orders import Order

    order = Order(
        "ORD-1",
        OrderType.TRADE_UP,
        "8010707",
        1350,
        2700,
        0,
        3999,
        "530",
        "A",
        "a",
        "731",
        "B",
        "b",
        "8.2",
        ORDER_DAY,
        date(2016, 2, 10),
    )
    assert penalty_for(order, date(2016, 2, 10)) == 0
    assert penalty_for(order, date(2016, 2, 11)) == 3999 - 1350
    assert penalty_for(record_return(order, ORDER_DAY + timedelta(days=3)), date(2017, 1, 1)) == 0
