"""Migrate, multi-site checks and the vendor desk's command line, on real virtual servers."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agent import database
from agent.cli import main as agent_main
from agent.clock import SimClock
from agent.keys import Plan
from agent.planner import plan
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.cli import main
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from simulator.vendor import Desk, VendorRefusedError

CATALOG = default_catalog()
NOW = datetime(2017, 1, 9, tzinfo=UTC)


def make(
    root: Path,
    keyring: VendorKeyring,
    model: str,
    release: str,
    users: int,
    *,
    shipped: date | None = None,
    seed: int = 7,
) -> ServerDir:
    spec = ServerSpec(model=model, release=release, shipped=shipped, users=users)
    return create_server(root, spec, keyring=keyring, seed=seed)


@pytest.fixture
def desk(tmp_path: Path, keyring: VendorKeyring) -> Desk:
    return Desk(keyring, CATALOG, tmp_path / "desk")


def active_db(server: ServerDir) -> Path:
    return server.db_path(server.active_slot())


# ---------------------------------------------------------------------------- Migrate


def test_mig_1_migrate_copies_records_under_the_import_rules_and_never_keys(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Both on 8.0+: records import within the licensed user limit, conflicts resolved, keys untouched."""
    old = make(tmp_path / "old", keyring, "6x", "8.0", 40, shipped=date(2014, 1, 1))
    new = make(tmp_path / "new", keyring, "731", "8.2", 4, shipped=NOW.date())
    old_keys, new_keys, old_digest = old.key_digest(), new.key_digest(), database.digest(active_db(old))
    report = desk.migrate(old.root, new.root, NOW)
    assert report.user_limit == 30  # the base licence: no user key on the new 731
    assert (len(report.imported), len(report.disabled)) == (26, 14)
    assert report.renamed and all(new_name.endswith("01") for _, new_name in report.renamed)
    assert database.user_count(active_db(new)) == 30
    assert report.keys_copied == 0 and new.key_digest() == new_keys and old.key_digest() == old_keys
    after = database.digest(active_db(old))
    assert (after.counts, after.checksum) == (old_digest.counts, old_digest.checksum)


def test_mig_1_a_transferred_user_key_raises_the_limit_migrate_imports_into(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Trade-in with key transfer, keys delivered, then Migrate: all 60 users of the 6x arrive on the 731."""
    old = make(tmp_path / "old", keyring, "6x", "8.0", 60, shipped=date(2014, 1, 1))
    placed = desk.order(
        "trade-in", old.root, "731", now=NOW, new_server_dir=tmp_path / "new", key_transfer=True
    )
    desk.deliver(NOW + timedelta(hours=24))
    report = desk.migrate(old.root, Path(placed.new_server_dir), NOW + timedelta(days=2))
    assert (report.user_limit, len(report.imported), report.disabled) == (100, 60, ())


def test_mig_1_migrate_below_8_0_is_refused_naming_the_steps(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Seed example: a 7.6 server is refused with MIGRATE_REQUIRES_8_0 and told to go 7.6 -> 7.7 -> 8.0."""
    old = make(tmp_path / "old", keyring, "6x", "7.6", 5, shipped=date(2013, 11, 1))
    new = make(tmp_path / "new", keyring, "731", "8.2", 0, shipped=NOW.date())
    before = database.digest(active_db(new))
    with pytest.raises(VendorRefusedError) as refused:
        desk.migrate(old.root, new.root, NOW)
    assert (refused.value.reason, refused.value.rule) == (Reason.MIGRATE_REQUIRES_8_0, "MIG-1")
    assert "7.6 -> 7.7 -> 8.0" in str(refused.value)
    assert database.digest(active_db(new)).checksum == before.checksum


async def test_mig_2_a_temporary_key_takes_a_7_6_server_through_7_7_to_8_0_then_migrate_runs(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """Seed example: a temporary key (ceiling 8.0) takes a 7.6 via 7.7 to 8.0, not 8.1; then Migrate."""
    old = make(tmp_path / "old", keyring, "6x", "7.6", 12, shipped=date(2013, 11, 1))
    new = make(tmp_path / "new", keyring, "731", "8.2", 0, shipped=NOW.date())
    lapsed = plan(CATALOG, old.facts(), old.key_checks(NOW.date()), "8.0", NOW)
    assert lapsed.refusal is not None and lapsed.refusal.reason is Reason.MAINTENANCE_KEY_EXPIRED
    info = desk.temporary_key(old.root, NOW)
    assert (info.plan, info.ceiling) == (Plan.TEMPORARY, "8.0")
    beyond = plan(CATALOG, old.facts(), old.key_checks(NOW.date()), "8.1", NOW)
    assert [s.release for s in beyond.steps] == ["7.7", "8.0", "8.1"]
    assert beyond.refusal is not None and beyond.refusal.reason is Reason.TEMPORARY_KEY_CEILING
    result = await Upgrader(old, CATALOG, SimClock(NOW, speed=float("inf"))).upgrade("8.0")
    assert [(s.release, s.outcome) for s in result.steps] == [("7.7", "committed"), ("8.0", "committed")]
    report = desk.migrate(old.root, new.root, NOW)
    assert len(report.imported) == 12


def test_mig_1_migrate_is_free_so_status_never_lists_it_inactive(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """``allworx-agent status`` on an 8.0 server without feature keys lists no Migrate feature to activate."""
    server = make(tmp_path / "box", keyring, "6x", "8.0", 10, shipped=date(2016, 1, 4))
    result = CliRunner().invoke(
        agent_main, ["status", "--server-dir", str(server.root), "--now", "2016-02-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["release"] == "8.0"
    assert document["features_active"] == []
    assert "Migrate" not in document["features_inactive"]


# ---------------------------------------------------------------------------- multi-site


def test_site_1_every_member_must_reach_the_newest_release_and_keyless_members_are_named(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """A new 731 on 8.2 sets the target; a lapsed 6x needs 4 steps and a key; a keyed 24x is ready."""
    lapsed = make(tmp_path / "hq", keyring, "6x", "7.6", 3, shipped=date(2013, 11, 1))
    keyed = make(tmp_path / "branch", keyring, "24x", "8.0", 3, shipped=date(2015, 9, 8))
    desk.purchase(keyed.root, "anytime-1y", NOW)
    new = make(tmp_path / "new", keyring, "731", "8.2", 0, shipped=NOW.date())
    report = desk.site_check([lapsed.root, keyed.root, new.root], NOW)
    assert report.target == "8.2" and not report.consistent and not report.ready
    hq, branch, fresh = report.members
    assert hq.steps == ("7.7", "8.0", "8.1", "8.2") and hq.needs_maintenance_key and hq.buy == "anytime-1y"
    assert hq.refusal is not None and hq.refusal.reason is Reason.MAINTENANCE_KEY_EXPIRED
    assert branch.steps == ("8.1", "8.2") and branch.ready and not branch.needs_maintenance_key
    assert fresh.steps == () and fresh.ready
    assert report.needs_keys == (lapsed.identity().serial,)


def test_site_1_a_member_that_cannot_run_the_target_is_blocked_not_sold_a_key(
    tmp_path: Path, keyring: VendorKeyring, desk: Desk
) -> None:
    """A legacy 6x cannot run 9.0: it is refused MODEL_UNSUPPORTED and not reported as needing a key."""
    legacy = make(tmp_path / "legacy", keyring, "6x", "8.3", 3, shipped=date(2018, 3, 1))
    desk.purchase(legacy.root, "anytime-1y", date(2022, 1, 1))
    connect = make(tmp_path / "connect", keyring, "731", "9.0", 0, shipped=date(2022, 1, 1))
    report = desk.site_check([legacy.root, connect.root], date(2022, 1, 1))
    member = report.members[0]
    assert report.target == "9.0" and member.refusal is not None
    assert member.refusal.reason is Reason.MODEL_UNSUPPORTED and not member.needs_maintenance_key


# ---------------------------------------------------------------------------- the command line


def sim(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def doc(result: Result) -> Any:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return json.loads(result.stdout)


def test_trade_1_cli_quote_prints_the_schedule_line_and_refuses_with_exit_2() -> None:
    """``vendor quote`` prints one JSON document; an ineligible pair is one error line and exit 2."""
    ok = sim("vendor", "quote", "trade-in", "--from", "24x", "--to", "731", "--key-transfer", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert {
        k: doc(ok)[k] for k in ("catalog_number", "partner_price", "msrp", "credit", "total_partner")
    } == {
        "catalog_number": "8010779",
        "partner_price": 927,
        "msrp": 1855,
        "credit": 1820,
        "total_partner": 1427,
    }
    refused = sim("vendor", "quote", "trade-in", "--from", "6x", "--to", "320", "--json")
    assert refused.exit_code == 2 and doc(refused)["reason"] == "TRADE_NOT_ELIGIBLE"
    assert refused.stderr.startswith("error: TRADE_NOT_ELIGIBLE: ") and refused.stderr.count("\n") == 1


def test_trade_3_cli_order_return_and_invoice_work_across_invocations(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """An order placed by one command is invoiced with a penalty by a later one, and keys arrive by --now."""
    make(tmp_path / "old", keyring, "24x", "8.0", 5, shipped=date(2012, 1, 1))
    common = ["--desk", str(tmp_path / "desk"), "--json"]
    placed = sim(
        "vendor",
        "order",
        "trade-in",
        "--old-dir",
        str(tmp_path / "old"),
        "--to",
        "731",
        "--new-dir",
        str(tmp_path / "new"),
        "--key-transfer",
        "--now",
        "2017-01-09",
        *common,
    )
    assert placed.exit_code == 0, placed.stderr
    order_id = doc(placed)["order_id"]
    late = sim("vendor", "invoice", order_id, "--now", "2017-02-09", *common)
    assert late.exit_code == 0 and doc(late)["penalty"] == CATALOG.model("731").list_price - 927
    keys = {c.info.feature for c in ServerDir(tmp_path / "new").key_checks(date(2017, 2, 9)) if c.info}
    assert "T1" in keys  # delivered by the later command's --now
    returned = sim("vendor", "return", order_id, "--now", "2017-02-10", *common)
    assert returned.exit_code == 0 and doc(returned)["returned_at"].startswith("2017-02-10")
    again = sim("vendor", "return", order_id, "--now", "2017-02-11", *common)
    assert again.exit_code == 1 and again.stderr.startswith("error: BAD_INPUT: ")


def test_mig_1_cli_migrate_refusal_is_exit_2_and_bad_input_exit_1(
    tmp_path: Path, keyring: VendorKeyring
) -> None:
    """``migrate`` below 8.0 exits 2 with its reason code; a missing option exits 1 with one line."""
    make(tmp_path / "old", keyring, "6x", "7.6", 3, shipped=date(2013, 11, 1))
    make(tmp_path / "new", keyring, "731", "8.2", 0, shipped=NOW.date())
    refused = sim(
        "migrate", "--from", str(tmp_path / "old"), "--to", str(tmp_path / "new"), "--now", "2017-01-09"
    )
    assert refused.exit_code == 2 and refused.stderr.startswith("error: MIGRATE_REQUIRES_8_0: ")
    bad = sim("migrate", "--from", str(tmp_path / "old"))
    assert (
        bad.exit_code == 1 and bad.stderr.startswith("error: BAD_INPUT: ") and "Traceback" not in bad.output
    )


def test_site_1_cli_site_check_prints_one_json_document(tmp_path: Path, keyring: VendorKeyring) -> None:
    """``site check --json`` reports the target and each member; exit 2 while a member cannot reach it."""
    make(tmp_path / "a", keyring, "6x", "7.6", 3, shipped=date(2013, 11, 1))
    make(tmp_path / "b", keyring, "731", "8.2", 0, shipped=NOW.date())
    result = sim(
        "site",
        "check",
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "--now",
        "2017-01-09",
        "--json",
        "--desk",
        str(tmp_path / "desk"),
    )
    report = doc(result)
    assert result.exit_code == 2 and report["target"] == "8.2"
    assert (
        report["members"][0]["steps"] == ["7.7", "8.0", "8.1", "8.2"]
        and report["members"][0]["buy"] == "anytime-1y"
    )
