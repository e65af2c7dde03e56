"""Warranties and maintenance plans: what a server ships with, what can be bought when (SWM-4, SWM-5)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agent.keys import KeyKind, Plan
from agent.planner import plan
from agent.store import ServerDir
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from simulator.vendor import Desk, PurchaseOption, VendorRefusedError, read_warranty
from simulator.vendor.plans import judge_purchase, key_term, options_on, ship_warranty

CATALOG = default_catalog()
BOUGHT = date(2015, 9, 8)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def make(tmp_path: Path, keyring: VendorKeyring, release: str, shipped: date, model: str = "6x") -> ServerDir:
    return create_server(
        tmp_path / "srv", ServerSpec(model=model, release=release, shipped=shipped, users=3), keyring=keyring
    )


# ---------------------------------------------------------------------------- pure rules


def test_swm_4_a_server_ships_with_a_12_month_hardware_warranty() -> None:
    """The shipping warranty ends twelve months after the ship date, with no plans bought."""
    warranty = ship_warranty(BOUGHT)
    assert (warranty.purchased, warranty.hardware_until, warranty.purchases) == (BOUGHT, date(2016, 9, 8), ())


@pytest.mark.parametrize("option", [PurchaseOption.HW_5Y, PurchaseOption.BUNDLE_5Y])
def test_swm_5_five_year_options_are_sold_up_to_day_90(option: PurchaseOption) -> None:
    """On day 90 after purchase the 5-year options are still on sale."""
    assert judge_purchase(option, BOUGHT, BOUGHT + timedelta(days=90)) is None


@pytest.mark.parametrize("option", [PurchaseOption.HW_5Y, PurchaseOption.BUNDLE_5Y])
def test_swm_5_five_year_options_are_refused_on_day_91(option: PurchaseOption) -> None:
    """On day 91 the bundle (and the hardware warranty alone) is refused with BUNDLE_WINDOW_CLOSED."""
    refusal = judge_purchase(option, BOUGHT, BOUGHT + timedelta(days=91))
    assert refusal is not None
    assert (refusal.reason, refusal.rule) == (Reason.BUNDLE_WINDOW_CLOSED, "SWM-5")
    assert "anytime" in refusal.message


def test_swm_5_after_90_days_only_the_anytime_licence_is_on_sale() -> None:
    """Within the window three options are on sale; after it, only the 1-year anytime licence."""
    assert set(options_on(BOUGHT, BOUGHT)) == set(PurchaseOption)
    assert options_on(BOUGHT, BOUGHT + timedelta(days=91)) == (PurchaseOption.ANYTIME_1Y,)
    assert judge_purchase(PurchaseOption.ANYTIME_1Y, BOUGHT, date(2020, 1, 1)) is None


def test_swm_5_the_anytime_licence_starts_the_day_it_is_bought() -> None:
    """An anytime licence bought years later runs one year from that day: never back-dated."""
    assert key_term(PurchaseOption.ANYTIME_1Y, BOUGHT, date(2019, 3, 4)) == (
        Plan.ANYTIME_1Y,
        date(2019, 3, 4),
        date(2020, 3, 4),
    )
    assert key_term(PurchaseOption.BUNDLE_5Y, BOUGHT, BOUGHT + timedelta(days=30)) == (
        Plan.BUNDLE_5Y,
        BOUGHT,
        date(2020, 9, 8),
    )
    assert key_term(PurchaseOption.HW_5Y, BOUGHT, BOUGHT) is None


# ---------------------------------------------------------------------------- on real virtual servers


def test_swm_4_a_new_server_has_a_90_day_ship_key_and_a_12_month_warranty(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """A server made on its ship date carries a valid 90-day maintenance key and a 12-month warranty."""
    server = make(tmp_path, keyring, "8.0", BOUGHT)
    checks = server.key_checks(BOUGHT)
    infos = [c.info for c in checks if c.valid and c.info is not None]
    assert [(i.kind, i.plan, i.starts, i.expires) for i in infos] == [
        (KeyKind.MAINTENANCE, Plan.SHIP_90D, BOUGHT, BOUGHT + timedelta(days=90))
    ]
    assert read_warranty(server).hardware_until == date(2016, 9, 8)


def test_swm_4_servers_shipped_before_7_1_came_with_no_maintenance_key(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """The programme began with 7.1: a server shipped in 2009 before 7.1 has no key at all."""
    server = make(tmp_path, keyring, "7.0", date(2009, 6, 1))
    assert server.installed_keys() == []


def test_swm_5_buying_the_bundle_in_the_window_extends_hardware_and_installs_a_5_year_key(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """The bundle bought on day 60 records 5 years of hardware warranty and installs a bundle-5y key."""
    server = make(tmp_path, keyring, "8.0", BOUGHT)
    desk = Desk(keyring, CATALOG, tmp_path / "desk")
    bought = desk.purchase(server.root, "bundle-5y", at(BOUGHT + timedelta(days=60)))
    assert bought.hardware_until == date(2020, 9, 8) and bought.key_expires == date(2020, 9, 8)
    assert read_warranty(server).hardware_until == date(2020, 9, 8)
    plans = {c.info.plan for c in server.key_checks(date(2019, 1, 1)) if c.valid and c.info}
    assert plans == {Plan.BUNDLE_5Y}


def test_swm_5_asking_for_the_bundle_on_day_91_is_refused_and_changes_nothing(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """On day 91 the desk refuses the bundle with BUNDLE_WINDOW_CLOSED; keys and warranty are untouched."""
    server = make(tmp_path, keyring, "8.0", BOUGHT)
    desk, keys_before = Desk(keyring, CATALOG, tmp_path / "desk"), server.key_digest()
    with pytest.raises(VendorRefusedError) as refused:
        desk.purchase(server.root, PurchaseOption.BUNDLE_5Y, at(BOUGHT + timedelta(days=91)))
    assert (refused.value.reason, refused.value.rule) == (Reason.BUNDLE_WINDOW_CLOSED, "SWM-5")
    assert server.key_digest() == keys_before
    assert not (server.root / "warranty.json").exists()


def test_swm_5_a_server_installed_in_2010_needs_a_single_anytime_licence_in_2013(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """Seed example: a 2010 server upgraded in 2013 needs one 1-year anytime licence, not three."""
    shipped, today = date(2010, 9, 1), date(2013, 6, 3)
    server = make(tmp_path, keyring, "7.2", shipped)
    before = plan(CATALOG, server.facts(), server.key_checks(today), "7.5", at(today))
    assert before.refusal is not None and before.refusal.reason is Reason.MAINTENANCE_KEY_EXPIRED
    desk = Desk(keyring, CATALOG, tmp_path / "desk")
    with pytest.raises(VendorRefusedError):
        desk.purchase(server.root, "bundle-5y", at(today))
    bought = desk.purchase(server.root, "anytime-1y", at(today))
    assert (bought.key_starts, bought.key_expires) == (today, date(2014, 6, 3))
    after = plan(CATALOG, server.facts(), server.key_checks(today), "7.5", at(today))
    assert [s.release for s in after.steps] == ["7.3", "7.4", "7.5"] and after.refusal is None
    assert [p.option for p in read_warranty(server).purchases] == [PurchaseOption.ANYTIME_1Y]
