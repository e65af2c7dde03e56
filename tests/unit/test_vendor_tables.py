"""The price schedules in the data match the printed ones entry for entry (TRADE-1, TRADE-4, XFER-1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import CatalogError
from simulator.vendor.tables import TRADE_FILE, OrderType, load_tables

# The three schedules of the vendor's Trade in / Trade up programme document, as printed there.
PRINTED_TRADE_IN = """
8010751	6x12 for 320	$459	$781
8010752	6x12 for 324	$534	$906
8010753	6x12 for 530	$722	$1,216
8010754	6x12 for 536	$847	$1,426
8010755	6x12 for 731	$1,347	$2,801
8010761	6x for 530	$609	$1,035
8010762	6x for 536	$734	$1,245
8010763	6x for 731	$1,234	$2,620
8010771	48x for 731	$927	$1,855
8010779	24x for 731	$927	$1,855
"""

PRINTED_TRADE_UP = """
8010701	320 to 530	$462	$924	31-50 FREE
8010702	320 to 536	$462	$924	31-50 FREE
8010703	320 to 731	$1,350	$2,700	31-50 FREE
8010704	324 to 530	$462	$924	31-50 FREE
8010705	324 to 536	$462	$924	31-50 FREE
8010706	324 to 731	$1,350	$2,700	31-50 FREE
8010707	530 to 731	$1,350	$2,700	51-100 FREE
8010708	536 to 731	$1,350	$2,700	51-100 FREE
"""

PRINTED_TRANSFER = """
8000010	To 320 or 324	$250	$500
8000020	To 530 or 536	$250	$500
8000030	To 731	$500	$1,000
"""


def dollars(text: str) -> int:
    return int(text.removeprefix("$").replace(",", ""))


def rows(table: str) -> list[list[str]]:
    return [line.split("\t") for line in table.strip().splitlines()]


def printed_trades(table: str, joiner: str) -> set[tuple[str, str, str, int, int, str | None]]:
    out = set()
    for cells in rows(table):
        old, new = cells[1].split(f" {joiner} ")
        free = cells[4].removesuffix(" FREE") if len(cells) > 4 else None
        out.add((cells[0], old, new, dollars(cells[2]), dollars(cells[3]), free))
    return out


def test_trade_1_trade_in_rows_match_the_printed_schedule_entry_for_entry() -> None:
    """Every trade-in row (catalogue number, pair, partner price, MSRP) is a printed one, and no other."""
    data = {
        (r.catalog_number, r.old_model, r.new_model, r.partner, r.msrp, r.free_user_key)
        for r in load_tables().trade_in
    }
    assert data == printed_trades(PRINTED_TRADE_IN, "for")
    assert len(load_tables().trade_in) == 10


def test_trade_4_trade_up_rows_match_the_printed_schedule_entry_for_entry() -> None:
    """Every trade-up row, free user key included, is the printed schedule's, and no other."""
    data = {
        (r.catalog_number, r.old_model, r.new_model, r.partner, r.msrp, r.free_user_key)
        for r in load_tables().trade_up
    }
    assert data == printed_trades(PRINTED_TRADE_UP, "to")
    assert len(load_tables().trade_up) == 8


def test_xfer_1_key_transfer_rows_match_the_printed_schedule_entry_for_entry() -> None:
    """Every key-transfer fee row (catalogue number, destinations, prices) is the printed schedule's."""
    printed = set()
    for number, dest, partner, msrp in rows(PRINTED_TRANSFER):
        models = tuple(dest.removeprefix("To ").split(" or "))
        printed.add((number, models, dollars(partner), dollars(msrp)))
    data = {(t.catalog_number, t.destinations, t.partner, t.msrp) for t in load_tables().key_transfer}
    assert data == printed


def test_xfer_2_the_24x_built_in_t1_is_data() -> None:
    """The 24x's built-in T1 (the programme's common questions) is held in the data, and only for the 24x."""
    assert dict(load_tables().builtin_features) == {"24x": ("T1",)}


def test_trade_1_lookup_finds_pairs_and_refuses_others() -> None:
    """The table lookup answers exactly the schedule's pairs."""
    tables = load_tables()
    line = tables.line(OrderType.TRADE_IN, "24x", "731")
    assert line is not None and (line.catalog_number, line.partner, line.msrp) == ("8010779", 927, 1855)
    assert tables.line(OrderType.TRADE_IN, "6x", "320") is None
    assert tables.line(OrderType.TRADE_UP, "24x", "731") is None
    transfer = tables.transfer_for("536")
    assert transfer is not None and transfer.catalog_number == "8000020"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("6x", "320", "goes down in capacity"),
        ("320", "530", "legacy model to a Connect model"),
        ("6x", "9999", "unknown model"),
    ],
)
def test_trade_1_a_broken_schedule_is_refused_on_load(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    """A trade-in row going down in capacity, from a Connect model or to an unknown model fails loudly."""
    text = TRADE_FILE.read_text().replace('old = "6x12"\nnew = "320"', f'old = "{old}"\nnew = "{new}"', 1)
    broken = tmp_path / "trade.toml"
    broken.write_text(text)
    with pytest.raises(CatalogError, match=problem):
        load_tables(broken)
