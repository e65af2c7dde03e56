"""Key validity to the instant: Starts/Expires as a date (its whole UTC day) or an ISO 8601 instant."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import crypto
from agent.cli import main as agent_cli
from agent.cliutil import DAY_OR_INSTANT
from agent.documents import KeyReport
from agent.keys import (
    KeyCheck,
    KeyInfo,
    KeyKind,
    Plan,
    TrustStore,
    best_check,
    check_key,
    check_key_text,
    parse_key,
    payload_bytes,
    sign_key,
)
from agent.mqtt.report import maintenance_key
from agent.store import ServerDir
from common.errors import KeyFormatError
from common.reasons import Reason
from simulator.cli import main as sim_cli
from simulator.fleet.verifier import RememberingVerifier
from simulator.issuer import issue_key, tamper
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server

SERIAL = "AWX00A1B2"
EXPIRY = datetime(2026, 11, 30, 18, 5, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))

# A key file signed before keys could carry instants, by a root and signer made from fixed bytes.
GOLDEN_ROOT = bytes(range(32))
GOLDEN_KEY = """-----BEGIN ALLWORX SOFTWARE KEY-----
Key-Id: MNT-AWX00A1B2-0a1b2c3d
Kind: maintenance
Serial: AWX00A1B2
Plan: anytime-1y
Issued: 2015-01-01
Starts: 2015-01-01
Expires: 2016-01-01
Certificate:
 eyJub3RfYWZ0ZXIiOiIyMDQwLTEyLTMxIiwibm90X2JlZm9yZSI6IjIwMDgtMDEt
 MDEiLCJwdWJsaWNfa2V5IjoiMjlhY2JhZTE0MWJjY2FmMGIyMmUxYTk0ZDM0ZDBi
 YzczNjFlNTI2ZDBiZmUxMmM4OTc5NGJjOTMyMjk2NmRkNyIsInB1cnBvc2VzIjpb
 ImtleXMiXSwic2lnbmF0dXJlIjoiYWQ2NDcxMTEwODg3ZjRjZDNlYjdjZjViODBi
 MmU3MTBkMGU4ZmNiODJkOTQ1YWMwNmI0YjEwMGQ1OTA4YTA2YmY3ZmZkZTdjMGMx
 ZmFlMWZkNGFjNTdiNjIyMDQ5OTFhNzQ5MTUzYzk3MmI5NmY0MmEwNWY2NjdlOGQ0
 NDNjMDgiLCJzaWduZXJfaWQiOiJ2ZW5kb3Ita2V5cy1nb2xkZW4iLCJ0eXBlIjoi
 YWxsd29yeC1jZXJ0aWZpY2F0ZSJ9
Signature:
 E+w93KWO5T9yEtO8yHsXsSoKxwHaDDVJf3QLEcaHRy8UX/VYkoDNh3vPQo/891kv
 3vAAmqvWDYQdITB6fEZJDA==
-----END ALLWORX SOFTWARE KEY-----
"""


@pytest.fixture(scope="module")
def trust(keyring: VendorKeyring) -> TrustStore:
    """The vendor root with no revocations."""
    return TrustStore(keyring.root_public)


def _maintenance(keyring: VendorKeyring, start: date, expires: date | None = None) -> str:
    return issue_key(
        keyring, serial=SERIAL, kind="maintenance", plan="anytime-1y", start=start, expires=expires
    )


def _at(text: str, trust: TrustStore, now: date) -> KeyCheck:
    return check_key_text(text, trust, SERIAL, now)


# ---------------------------------------------------------------------------- the window


@pytest.mark.parametrize(
    ("now", "valid"),
    [(EXPIRY - timedelta(seconds=1), True), (EXPIRY, True), (EXPIRY + timedelta(seconds=1), False)],
    ids=["18:04:59", "18:05:00", "18:05:01"],
)
def test_an_instant_expiry_is_judged_to_the_second(
    keyring: VendorKeyring, trust: TrustStore, now: datetime, valid: bool
) -> None:
    """Expires 18:05:00Z: valid through 18:05:00 itself, refused one second later."""
    assert _at(_maintenance(keyring, date(2026, 1, 1), EXPIRY), trust, now).valid is valid


def test_an_expired_instant_key_is_refused_and_names_the_instant(
    keyring: VendorKeyring, trust: TrustStore
) -> None:
    """One second after its expiry instant, a maintenance key is MAINTENANCE_KEY_EXPIRED, saying when."""
    check = _at(_maintenance(keyring, date(2026, 1, 1), EXPIRY), trust, EXPIRY + timedelta(seconds=1))
    assert check.reason is Reason.MAINTENANCE_KEY_EXPIRED
    assert "expired at 2026-11-30T18:05:00+00:00;" in check.message


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (datetime(2014, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), Reason.KEY_NOT_YET_VALID),
        (datetime(2015, 1, 1, tzinfo=UTC), None),
        (datetime(2016, 1, 1, 23, 59, 59, 999999, tzinfo=UTC), None),
        (datetime(2016, 1, 2, 0, 30, tzinfo=PLUS_TWO), None),  # 2016-01-01T22:30Z
        (datetime(2016, 1, 2, tzinfo=UTC), Reason.MAINTENANCE_KEY_EXPIRED),
    ],
    ids=["before the start day", "start of the start day", "end of the expiry day", "offset", "day after"],
)
def test_date_keys_keep_their_utc_day_boundaries(
    keyring: VendorKeyring, trust: TrustStore, now: datetime, reason: Reason | None
) -> None:
    """A date key starts at the start of its UTC start day and lasts through the end of its expiry day."""
    assert _at(_maintenance(keyring, date(2015, 1, 1)), trust, now).reason is reason


def test_a_date_key_keeps_its_messages(keyring: VendorKeyring, trust: TrustStore) -> None:
    """An expired date key still says "expired on <day>"."""
    check = _at(_maintenance(keyring, date(2015, 1, 1)), trust, datetime(2016, 1, 2, tzinfo=UTC))
    assert "expired on 2016-01-01;" in check.message


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (datetime(2026, 11, 30, 6, 59, 59, tzinfo=UTC), Reason.KEY_NOT_YET_VALID),
        (datetime(2026, 11, 30, 7, 0, 0, tzinfo=UTC), None),
    ],
    ids=["06:59:59Z", "07:00:00Z"],
)
def test_a_starts_instant_is_judged_to_the_second(
    keyring: VendorKeyring, trust: TrustStore, now: datetime, reason: Reason | None
) -> None:
    """Starts 09:00+02:00 is 07:00Z: not yet valid a second before, valid from that instant."""
    text = _maintenance(keyring, datetime(2026, 11, 30, 9, tzinfo=PLUS_TWO))
    assert _at(text, trust, now).reason is reason


def test_not_yet_valid_names_the_start_instant(keyring: VendorKeyring, trust: TrustStore) -> None:
    """A key judged before its start instant says which instant it starts at."""
    text = _maintenance(keyring, datetime(2026, 11, 30, 9, tzinfo=PLUS_TWO))
    check = _at(text, trust, datetime(2026, 11, 30, tzinfo=UTC))
    assert check.message.endswith("is not valid until 2026-11-30T09:00:00+02:00.")


@pytest.mark.parametrize(
    ("today", "reason"),
    [
        (date(2026, 11, 29), None),
        (date(2026, 11, 30), Reason.MAINTENANCE_KEY_EXPIRED),
    ],
)
def test_a_date_stands_for_its_whole_day(
    keyring: VendorKeyring, trust: TrustStore, today: date, reason: Reason | None
) -> None:
    """Judged on a date, a key expiring at 18:05 that day is not valid all day: it counts as expired."""
    assert _at(_maintenance(keyring, date(2026, 1, 1), EXPIRY), trust, today).reason is reason


@pytest.mark.parametrize(
    ("today", "reason"),
    [
        (date(2026, 11, 30), Reason.KEY_NOT_YET_VALID),
        (date(2026, 12, 1), None),
    ],
)
def test_a_date_is_before_a_start_later_that_day(
    keyring: VendorKeyring, trust: TrustStore, today: date, reason: Reason | None
) -> None:
    """Judged on a date, a key starting at 09:00 that day is not valid all day: it is not yet valid."""
    text = _maintenance(keyring, datetime(2026, 11, 30, 9, tzinfo=PLUS_TWO))
    assert _at(text, trust, today).reason is reason


_DAYS = st.dates(min_value=date(2010, 1, 1), max_value=date(2039, 1, 1))
_ZONES = st.builds(timezone, st.integers(-14 * 60, 14 * 60).map(lambda m: timedelta(minutes=m)))
_NOWS = st.datetimes(datetime(2009, 6, 1), datetime(2040, 6, 1), timezones=_ZONES)


@settings(max_examples=200, deadline=None)
@given(starts=_DAYS, length=st.integers(0, 800), now=st.one_of(_NOWS, _DAYS))
def test_date_keys_give_the_verdicts_of_the_day_comparison(
    keyring: VendorKeyring, trust: TrustStore, starts: date, length: int, now: datetime | date
) -> None:
    """For date keys, judging an instant (or a date) agrees with "its UTC day within [starts, expires]"."""
    expires = starts + timedelta(days=length)
    text = _maintenance(keyring, starts, expires)
    today = now.astimezone(UTC).date() if isinstance(now, datetime) else now
    expected = (
        Reason.KEY_NOT_YET_VALID
        if today < starts
        else Reason.MAINTENANCE_KEY_EXPIRED
        if today > expires
        else None
    )
    check = _at(text, trust, now)
    assert check.reason is expected
    assert check.valid is (expected is None)


# ---------------------------------------------------------------------------- the key file


def test_a_date_key_file_signed_before_instants_still_verifies_byte_for_byte() -> None:
    """A date-only key signed before instants existed parses, verifies and renders to the same bytes."""
    key = parse_key(GOLDEN_KEY)
    trust = TrustStore(crypto.public_key(GOLDEN_ROOT))
    assert key.text() == GOLDEN_KEY
    assert check_key(key, trust, SERIAL, datetime(2015, 6, 1, 12, tzinfo=UTC)).valid


def test_a_date_key_signs_the_same_payload() -> None:
    """The signed payload of a date-only key spells its dates as plain days."""
    payload = json.loads(payload_bytes(parse_key(GOLDEN_KEY).info))
    assert (payload["issued"], payload["starts"], payload["expires"]) == (
        "2015-01-01",
        "2015-01-01",
        "2016-01-01",
    )


def test_an_instant_key_round_trips_and_its_instant_is_signed(
    keyring: VendorKeyring, trust: TrustStore
) -> None:
    """An instant key renders its instants, parses back to the same text, and an altered instant breaks it."""
    text = _maintenance(keyring, datetime(2026, 11, 30, 9, tzinfo=PLUS_TWO), EXPIRY)
    assert "Starts: 2026-11-30T09:00:00+02:00\nExpires: 2026-11-30T18:05:00+00:00\n" in text
    assert parse_key(text).text() == text
    assert _at(tamper(text), trust, EXPIRY).reason is Reason.KEY_SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("Expires", "2026-11-30T18:05:00", "or an instant with a UTC offset like"),
        ("Expires", "2026-11-30T25:00:00Z", "or an instant with a UTC offset like"),
        ("Issued", "2015-01-01T00:00:00Z", "must be a date"),
    ],
    ids=["no offset", "no such time", "issued instant"],
)
def test_instants_need_a_utc_offset_and_issued_stays_a_date(field: str, value: str, words: str) -> None:
    """A naive or impossible instant, or an instant where only a date is allowed, is a format error."""
    original = {"Expires": "Expires: 2016-01-01", "Issued": "Issued: 2015-01-01"}[field]
    with pytest.raises(KeyFormatError, match=words):
        parse_key(GOLDEN_KEY.replace(original, f"{field}: {value}"))


def test_a_key_cannot_expire_before_it_starts_across_forms(keyring: VendorKeyring) -> None:
    """An instant expiry before a date start (and so before the start of that day) is refused."""
    private, cert = keyring.signing_key("keys")
    info = KeyInfo(
        key_id="MNT-X-1", kind=KeyKind.MAINTENANCE, serial=SERIAL, issued=date(2026, 11, 30),
        starts=date(2026, 12, 1), expires=datetime(2026, 11, 30, 23, 59, tzinfo=UTC), plan=Plan.ANYTIME_1Y,
    )  # fmt: skip
    with pytest.raises(KeyFormatError, match="expires before it starts"):
        sign_key(info, private, cert)


def test_a_key_built_with_a_naive_instant_cannot_be_signed(keyring: VendorKeyring) -> None:
    """An instant without a UTC offset would mean a different instant on each server: refused."""
    private, cert = keyring.signing_key("keys")
    info = KeyInfo(
        key_id="MNT-X-2", kind=KeyKind.MAINTENANCE, serial=SERIAL, issued=date(2026, 11, 30),
        starts=date(2026, 11, 30), expires=datetime(2026, 12, 1, 18, 5), plan=Plan.ANYTIME_1Y,
    )  # fmt: skip
    with pytest.raises(KeyFormatError, match="Expires must carry a UTC offset"):
        sign_key(info, private, cert)


def test_a_key_built_with_an_issued_instant_cannot_be_signed(keyring: VendorKeyring) -> None:
    """Issued stays a date: a key signed with an issued instant could not be read back."""
    private, cert = keyring.signing_key("keys")
    info = KeyInfo(
        key_id="MNT-X-3", kind=KeyKind.MAINTENANCE, serial=SERIAL, issued=EXPIRY,
        starts=date(2026, 11, 30), expires=date(2027, 11, 30), plan=Plan.ANYTIME_1Y,
    )  # fmt: skip
    with pytest.raises(KeyFormatError, match="Issued must be a date"):
        sign_key(info, private, cert)


# ---------------------------------------------------------------------------- comparing keys


def _valid_check(key_id: str, expires: date) -> KeyCheck:
    info = KeyInfo(
        key_id=key_id, kind=KeyKind.MAINTENANCE, serial=SERIAL, issued=date(2026, 1, 1),
        starts=date(2026, 1, 1), expires=expires, plan=Plan.ANYTIME_1Y,
    )  # fmt: skip
    return KeyCheck(info=info, valid=True)


def test_the_best_key_compares_a_date_with_an_instant_by_when_each_ends() -> None:
    """A key valid through the end of 30 November outranks one ending at 18:05 that day, and vice versa."""
    day = _valid_check("day", date(2026, 11, 30))
    instant = _valid_check("instant", EXPIRY)
    later = _valid_check("later", datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
    assert best_check([instant, day]) is day
    assert best_check([day, later]) is later


def test_the_reported_maintenance_key_carries_the_instant() -> None:
    """The retained state's maintenance key picks the later end and writes an instant as an instant."""
    day = KeyReport(
        valid=True, reason=None, key_id="day", kind="maintenance", expires=date(2026, 11, 30), message=""
    )
    instant = KeyReport(valid=True, reason=None, key_id="i", kind="maintenance", expires=EXPIRY, message="")
    later = KeyReport(
        valid=True,
        reason=None,
        key_id="later",
        kind="maintenance",
        expires=EXPIRY + timedelta(days=1),
        message="",
    )
    assert maintenance_key([instant, day]) == maintenance_key([day])
    reported = maintenance_key([day, later])
    assert reported is not None
    assert reported.wire()["expires"] == "2026-12-01T18:05:00+00:00"


# ---------------------------------------------------------------------------- the server directory


def test_remembered_key_checks_judge_each_instant(tmp_path: Path, keyring: VendorKeyring) -> None:
    """Within one day a fleet's remembered checks still see a key expire between two calls a second apart."""
    made = create_server(tmp_path / "box", ServerSpec(model="6x", release="7.1", shipped=date(2009, 6, 1)))
    server = ServerDir(made.root, verifier=RememberingVerifier())
    text = issue_key(
        keyring, serial=server.identity().serial, kind="maintenance", plan="anytime-1y",
        start=date(2026, 1, 1), expires=EXPIRY,
    )  # fmt: skip
    assert server.install_key(text, EXPIRY).valid
    before = server.key_checks(EXPIRY - timedelta(seconds=1))
    after = server.key_checks(EXPIRY + timedelta(seconds=1))
    assert [c.valid for c in before] == [True]
    assert [c.reason for c in after] == [Reason.MAINTENANCE_KEY_EXPIRED]
    assert after == ServerDir(server.root).key_checks(EXPIRY + timedelta(seconds=1))


def test_installing_an_expired_instant_key_is_refused(tmp_path: Path, keyring: VendorKeyring) -> None:
    """A key whose expiry instant has passed is refused at install and nothing is written."""
    server = create_server(tmp_path / "box", ServerSpec(model="6x", release="7.1", shipped=date(2009, 6, 1)))
    text = issue_key(
        keyring, serial=server.identity().serial, kind="maintenance", plan="anytime-1y",
        start=date(2026, 1, 1), expires=EXPIRY,
    )  # fmt: skip
    check = server.install_key(text, EXPIRY + timedelta(seconds=1))
    assert check.reason is Reason.MAINTENANCE_KEY_EXPIRED
    assert not list(server.keys_dir.glob("*.key"))


@pytest.fixture
def lab_box(tmp_path: Path, keyring: VendorKeyring) -> ServerDir:
    """A 6x on 7.1 shipped before ship keys, whose only maintenance key expires at 18:05:00Z."""
    server = create_server(tmp_path / "box", ServerSpec(model="6x", release="7.1", shipped=date(2009, 6, 1)))
    text = issue_key(
        keyring, serial=server.identity().serial, kind="maintenance", plan="anytime-1y",
        start=date(2026, 1, 1), expires=EXPIRY,
    )  # fmt: skip
    assert server.install_key(text, EXPIRY).valid
    return server


def _agent_json(server: ServerDir, now: datetime, *command: str) -> tuple[int, dict[str, Any]]:
    args = [*command, "--server-dir", str(server.root), "--json", "--now", now.isoformat()]
    result = CliRunner().invoke(agent_cli, args)
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize(
    ("now", "code", "outcome"),
    [(EXPIRY - timedelta(seconds=1), 0, "would-install"), (EXPIRY + timedelta(seconds=1), 2, "refused")],
    ids=["18:04:59", "18:05:01"],
)
def test_agent_plan_judges_the_key_at_the_instant(
    lab_box: ServerDir, now: datetime, code: int, outcome: str
) -> None:
    """`allworx-agent plan --now <instant>` authorises a second before the key's expiry, refuses after."""
    exit_code, document = _agent_json(lab_box, now, "plan", "--to", "7.2")
    assert exit_code == code
    assert document["steps"][0]["outcome"] == outcome


@pytest.mark.parametrize("command", [("keys", "list"), ("status",)], ids=["keys list", "status"])
def test_agent_key_reports_judge_the_instant(lab_box: ServerDir, command: tuple[str, ...]) -> None:
    """`keys list` and `status` report the key valid at 18:04:59 and expired at 18:05:01, with its instant."""
    _, before = _agent_json(lab_box, EXPIRY - timedelta(seconds=1), *command)
    _, after = _agent_json(lab_box, EXPIRY + timedelta(seconds=1), *command)
    assert before["keys"][0]["valid"] is True
    assert after["keys"][0]["reason"] == "MAINTENANCE_KEY_EXPIRED"
    assert after["keys"][0]["expires"] == "2026-11-30T18:05:00+00:00"


# ---------------------------------------------------------------------------- allworx-sim keys issue


def _issue(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    args = ["keys", "issue", "--serial", SERIAL, "--kind", "maintenance", "--plan", "anytime-1y"]
    args += ["--keyring", str(tmp_path / "vendor"), "--out", str(tmp_path / "k.key"), "--json", *extra]
    result = CliRunner().invoke(sim_cli, args)
    return result.exit_code, result.stdout, result.stderr


def test_cli_issue_takes_instants(tmp_path: Path) -> None:
    """`keys issue --start/--expires` take instants with their offsets and the key carries them."""
    code, out, _ = _issue(
        tmp_path, "--start", "2026-11-30T09:00:00+02:00", "--expires", "2026-11-30T18:05:00Z"
    )
    assert code == 0
    document = json.loads(out)
    assert (document["starts"], document["expires"]) == (
        "2026-11-30T09:00:00+02:00",
        "2026-11-30T18:05:00+00:00",
    )
    assert parse_key((tmp_path / "k.key").read_text()).info.expires == EXPIRY


def test_cli_plan_expiry_stays_a_date_after_an_instant_start(tmp_path: Path) -> None:
    """Without --expires, the plan's expiry is a date counted from the start instant's UTC day."""
    code, out, _ = _issue(tmp_path, "--start", "2026-11-30T23:30:00-02:00")
    assert code == 0
    assert json.loads(out)["expires"] == "2027-12-01"
    assert parse_key((tmp_path / "k.key").read_text()).info.issued == date(2026, 12, 1)


def test_cli_issue_refuses_an_instant_without_offset(tmp_path: Path) -> None:
    """An instant without a UTC offset is bad input: one error line, exit 1, no key written."""
    code, _, err = _issue(tmp_path, "--expires", "2026-11-30T18:05:00")
    assert code == 1
    assert err.startswith("error: BAD_INPUT: ")
    assert "UTC offset" in err
    assert not (tmp_path / "k.key").exists()


@pytest.mark.parametrize(
    "text", ["2026-11-30T18:05:00", "3000-01-01T00:00:00Z", "2026-11-30T18:65:00Z", "soon"]
)
def test_day_or_instant_refuses_what_it_cannot_read(text: str) -> None:
    """Naive, out-of-range or impossible instants and non-dates are bad parameters."""
    with pytest.raises(click.BadParameter):
        DAY_OR_INSTANT.convert(text, None, None)


def test_day_or_instant_reads_both_forms() -> None:
    """A day stays a date; an instant with ``Z`` becomes an aware datetime."""
    assert DAY_OR_INSTANT.convert("2026-11-30", None, None) == date(2026, 11, 30)
    assert DAY_OR_INSTANT.convert("2026-11-30T18:05:00Z", None, None) == EXPIRY
