"""Key files, revocation lists, key verification, issuance and the vendor keyring."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import crypto
from agent.keys import (
    KeyCheck,
    KeyInfo,
    KeyKind,
    Plan,
    TrustStore,
    active_features,
    best_check,
    check_key_text,
    feature_counts,
    install_revocation_list,
    licensed_users,
    load_trust,
    maintenance_state,
    parse_key,
    parse_revocation_list,
    patch_authorised,
    sign_key,
    sign_revocation_list,
    user_range,
)
from common.errors import KeyFormatError, KeyIssueError, SignatureError, StaleRevocationError, StoreError
from common.reasons import Reason
from simulator.issuer import issue_key, plan_expiry, ship_key, tamper
from simulator.keycmd import keys as keys_cli
from simulator.keyring import VendorKeyring

SERIAL = "AWX00A1B2"
TODAY = date(2015, 6, 1)


@pytest.fixture(scope="module")
def trust(keyring: VendorKeyring) -> TrustStore:
    """The vendor root with no revocations."""
    return TrustStore(keyring.root_public)


def _maintenance(keyring: VendorKeyring, start: date = date(2015, 1, 1), plan: str = "anytime-1y") -> str:
    return issue_key(keyring, serial=SERIAL, kind="maintenance", plan=plan, start=start)


def _forged_by_other_root(keyring: VendorKeyring) -> str:
    """A key signed by a look-alike keyring: its certificate chains to another root."""
    fake_root, fake_signer = crypto.generate_private_key(), crypto.generate_private_key()
    cert = crypto.issue_certificate(
        fake_root,
        signer_id="vendor-keys-fake",
        public=crypto.public_key(fake_signer),
        purposes=("keys",),
        not_before=date(2008, 1, 1),
        not_after=date(2040, 1, 1),
    )
    info = parse_key(_maintenance(keyring)).info
    return sign_key(info, fake_signer, cert).text()


def _forged_with_vendor_certificate(keyring: VendorKeyring) -> str:
    """A key carrying the vendor's real certificate but signed by someone else's key."""
    key = parse_key(_maintenance(keyring))
    return replace(key, signature=crypto.sign(crypto.generate_private_key(), b"anything")).text()


@dataclass(frozen=True)
class Refused:
    name: str
    make: Callable[[VendorKeyring], str]
    reason: Reason
    passed: int
    today: date = TODAY
    revoke: bool = False


REFUSALS = [
    Refused("garbled", lambda k: _maintenance(k).replace("Kind:", "Kynd;"), Reason.KEY_FORMAT_INVALID, 0),
    Refused("other root", _forged_by_other_root, Reason.KEY_SIGNER_UNTRUSTED, 1),
    Refused("forged signature", _forged_with_vendor_certificate, Reason.KEY_SIGNATURE_INVALID, 1),
    Refused("altered", lambda k: tamper(_maintenance(k)), Reason.KEY_SIGNATURE_INVALID, 1),
    Refused(
        "other serial",
        lambda k: issue_key(
            k, serial="AWX99999", kind="maintenance", plan="anytime-1y", start=date(2015, 1, 1)
        ),
        Reason.KEY_SERIAL_MISMATCH,
        2,
    ),
    Refused("revoked", _maintenance, Reason.KEY_REVOKED, 3, revoke=True),
    Refused("not yet valid", lambda k: _maintenance(k, start=date(2015, 7, 1)), Reason.KEY_NOT_YET_VALID, 4),
    Refused("maintenance expired", _maintenance, Reason.MAINTENANCE_KEY_EXPIRED, 4, today=date(2016, 1, 2)),
    Refused(
        "feature expired",
        lambda k: issue_key(
            k, serial=SERIAL, kind="feature", feature="T1", start=date(2014, 1, 1), expires=date(2015, 1, 1)
        ),
        Reason.KEY_EXPIRED,
        4,
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_each_bad_key_is_refused_with_its_own_reason(
    case: Refused, keyring: VendorKeyring, trust: TrustStore
) -> None:
    """Every kind of bad key gets its own reason code, the checks passed so far and a message."""
    text = case.make(keyring)
    if case.revoke:
        trust = replace(trust, revoked=frozenset({parse_key(text).info.key_id}))
    check = check_key_text(text, trust, SERIAL, case.today)
    assert (check.valid, check.reason, check.passed) == (False, case.reason, case.passed)
    assert check.message.endswith(".")


def test_a_good_key_passes_every_check(keyring: VendorKeyring, trust: TrustStore) -> None:
    """A vendor key for this serial inside its window passes all five checks."""
    check = check_key_text(_maintenance(keyring), trust, SERIAL, TODAY)
    assert (check.valid, check.reason, check.passed) == (True, None, 5)


@pytest.mark.parametrize(
    ("today", "valid"),
    [
        (date(2014, 12, 31), False),
        (date(2015, 1, 1), True),
        (date(2016, 1, 1), True),
        (date(2016, 1, 2), False),
    ],
)
def test_window_is_inclusive(keyring: VendorKeyring, trust: TrustStore, today: date, valid: bool) -> None:
    """A key is valid from its start day through its expiry day, both included (SWM-2)."""
    assert check_key_text(_maintenance(keyring), trust, SERIAL, today).valid is valid


def test_expired_signer_certificate_is_untrusted(keyring: VendorKeyring, trust: TrustStore) -> None:
    """After the signing certificate's period (2040) the key's signer is no longer trusted."""
    check = check_key_text(_maintenance(keyring), trust, SERIAL, date(2041, 1, 2))
    assert check.reason is Reason.KEY_SIGNER_UNTRUSTED
    assert "expired on 2040-12-31" in check.message


# ---------------------------------------------------------------------------- the text format


def test_text_round_trips(keyring: VendorKeyring) -> None:
    """Parsing a key file and rendering it gives back the same text."""
    text = issue_key(keyring, serial=SERIAL, kind="users", users="51-100", start=TODAY, count=2)
    assert parse_key(text).text() == text


EMAIL_MANGLING: dict[str, Callable[[str], str | bytes]] = {
    "crlf": lambda t: t.replace("\n", "\r\n"),
    "indented": lambda t: "\n".join("    " + line for line in t.splitlines()),
    "quoted": lambda t: "\n".join("> " + line for line in t.splitlines()),
    "junk around": lambda t: "Hi,\n\nhere is your key:\n\n\n" + t + "\n\nRegards,\n-- \nVendor desk\n",
    "blank lines": lambda t: t.replace("\n", "\n\n"),
    "bom and bytes": lambda t: ("\ufeff" + t).encode("utf-8"),
    "rewrapped base64": lambda t: t.replace("\n ", ""),
}


@pytest.mark.parametrize("mangle", EMAIL_MANGLING.values(), ids=list(EMAIL_MANGLING))
def test_parser_tolerates_what_email_does(
    keyring: VendorKeyring, trust: TrustStore, mangle: Callable[[str], str | bytes]
) -> None:
    """CRLF, indentation, quoting, junk, blank lines, a BOM and rewrapping still parse to a valid key."""
    text = _maintenance(keyring)
    assert parse_key(mangle(text)) == parse_key(text)
    assert check_key_text(mangle(text), trust, SERIAL, TODAY).valid


MALFORMED: dict[str, tuple[Callable[[str], str], str]] = {
    "no begin": (lambda t: t.replace("-----BEGIN", "-----BEGUN"), "no '-----BEGIN"),
    "no end": (lambda t: t.replace("-----END", "-----FIN"), "no '-----END"),
    "missing serial": (lambda t: t.replace("Serial: AWX00A1B2\n", ""), "Serial field is missing"),
    "unknown field": (lambda t: t.replace("Kind:", "Colour: red\nKind:"), "unknown field 'Colour'"),
    "duplicate field": (
        lambda t: t.replace("Kind: maintenance", "Kind: maintenance\nKind: feature"),
        "twice",
    ),
    "bad date": (lambda t: t.replace("Starts: 2015-01-01", "Starts: 1 Jan 2015"), "Starts must be a date"),
    "bad kind": (lambda t: t.replace("Kind: maintenance", "Kind: gold"), "unknown Kind"),
    "bad plan": (lambda t: t.replace("Plan: anytime-1y", "Plan: forever"), "unknown Plan"),
    "no plan": (lambda t: t.replace("Plan: anytime-1y\n", ""), "needs plan"),
    "temporary without ceiling": (lambda t: t.replace("anytime-1y", "temporary"), "Ceiling"),
    "stray line": (lambda t: t.replace("Kind:", "hello world\nKind:"), "not a 'Field: value' line"),
    "no signature": (
        lambda t: t[: t.index("Signature:")] + "-----END ALLWORX SOFTWARE KEY-----\n",
        "missing",
    ),
    "bad certificate": (lambda t: t.replace("Certificate:\n ey", "Certificate:\n zz"), "Certificate block"),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_key_files_say_what_is_wrong(
    keyring: VendorKeyring, case: tuple[Callable[[str], str], str]
) -> None:
    """Each malformation raises KeyFormatError (KEY_FORMAT_INVALID) naming the problem."""
    mangle, message = case
    with pytest.raises(KeyFormatError, match=message) as caught:
        parse_key(mangle(_maintenance(keyring)))
    assert caught.value.reason is Reason.KEY_FORMAT_INVALID


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_parser_raises_only_key_format_error_on_random_input(data: str | bytes) -> None:
    """Random text or bytes never raise anything but KeyFormatError."""
    with contextlib.suppress(KeyFormatError):
        parse_key(data)


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0, max_value=2000), junk=st.text(max_size=20), drop=st.integers(0, 40))
def test_parser_survives_damaged_key_files(keyring: VendorKeyring, cut: int, junk: str, drop: int) -> None:
    """A real key file with characters inserted or removed parses or raises KeyFormatError, never more."""
    text = _maintenance(keyring)
    damaged = text[:cut] + junk + text[cut + drop :]
    with contextlib.suppress(KeyFormatError):
        parse_key(damaged)
    check = check_key_text(damaged, TrustStore(keyring.root_public), SERIAL, TODAY)
    assert isinstance(check, KeyCheck)


# ---------------------------------------------------------------------------- helpers for the policy


def _check(kind: KeyKind, valid: bool = True, passed: int = 5, **fields: object) -> KeyCheck:
    info = KeyInfo(key_id=f"K{len(fields)}{passed}{valid}", kind=kind, serial=SERIAL, issued=TODAY, **fields)  # type: ignore[arg-type]  # reason: test factory
    return KeyCheck(info=info, valid=valid, reason=None if valid else Reason.KEY_REVOKED, passed=passed)


def test_best_key_prefers_valid_then_most_checks_passed() -> None:
    """The best maintenance key is the valid full one lasting longest, else the one that got furthest."""
    expired = _check(KeyKind.MAINTENANCE, False, 4, plan=Plan.ANYTIME_1Y, expires=date(2015, 1, 1))
    forged = _check(KeyKind.MAINTENANCE, False, 1, plan=Plan.ANYTIME_1Y, expires=date(2030, 1, 1))
    short = _check(KeyKind.MAINTENANCE, True, plan=Plan.ANYTIME_1Y, expires=date(2016, 1, 1))
    long = _check(KeyKind.MAINTENANCE, True, plan=Plan.BUNDLE_5Y, expires=date(2020, 1, 1))
    temporary = _check(
        KeyKind.MAINTENANCE, True, plan=Plan.TEMPORARY, ceiling="8.0", expires=date(2030, 1, 1)
    )
    feature = _check(KeyKind.FEATURE, feature="T1")
    assert best_check([forged, expired]) is expired
    assert best_check([expired, short, long, temporary, feature]) is long
    assert best_check([temporary, short]) is short
    assert best_check([feature]) is None


@pytest.mark.parametrize(
    ("checks", "state"),
    [
        ([], "none"),
        ([_check(KeyKind.FEATURE, feature="T1")], "none"),
        ([_check(KeyKind.MAINTENANCE, False, 4, plan=Plan.SHIP_90D)], "expired"),
        (
            [
                _check(KeyKind.MAINTENANCE, False, 4, plan=Plan.SHIP_90D),
                _check(KeyKind.MAINTENANCE, plan=Plan.ANYTIME_1Y),
            ],
            "valid",
        ),
    ],
    ids=["no keys", "feature only", "expired only", "one valid"],
)
def test_maintenance_state(checks: list[KeyCheck], state: str) -> None:
    """The maintenance state is valid, expired (only invalid keys) or none (SWM-1, SWM-2)."""
    assert maintenance_state(checks) == state


def test_feature_and_user_helpers_count_only_valid_keys() -> None:
    """Feature keys of one product stack; user range is the highest valid one; patches match exactly."""
    checks = [
        _check(KeyKind.FEATURE, feature="T1", count=2),
        _check(KeyKind.FEATURE, passed=4, feature="T1", count=3),
        _check(KeyKind.FEATURE, valid=False, passed=4, feature="Reach"),
        _check(KeyKind.USERS, users="31-50"),
        _check(KeyKind.USERS, passed=3, users="51-100"),
        _check(KeyKind.USERS, valid=False, passed=4, users="101-250"),
        _check(KeyKind.PATCH, patch_build="7.6.4.9"),
    ]
    assert feature_counts(checks) == {"T1": 5}
    assert active_features(checks) == {"T1"}
    assert user_range(checks) == (51, 100)
    assert licensed_users(checks, 30) == 100
    assert licensed_users([], 30) == 30
    assert patch_authorised(checks, "7.6.4.9") is not None
    assert patch_authorised(checks, "8.2.6.12") is None


# ---------------------------------------------------------------------------- revocation lists and trust


def test_revocation_lists_only_move_forward(tmp_path: Path) -> None:
    """A newer list replaces the installed one; an older or equal list is refused as stale."""
    keyring = VendorKeyring.load_or_create(tmp_path / "vendor")
    keyring.write_trust(tmp_path / "trust")
    first = keyring.revoke("MNT-A-00000001", TODAY)
    second = keyring.revoke("MNT-B-00000002", TODAY)
    assert [parse_revocation_list(t).sequence for t in (first, second)] == [1, 2]
    trust = install_revocation_list(tmp_path / "trust", second, TODAY)
    assert trust.revoked == {"MNT-A-00000001", "MNT-B-00000002"}
    with pytest.raises(StaleRevocationError) as caught:
        install_revocation_list(tmp_path / "trust", first, TODAY)
    assert caught.value.reason is Reason.REVOCATION_LIST_STALE
    assert load_trust(tmp_path / "trust").revocation_sequence == 2


def test_revocation_list_needs_the_revocations_purpose(keyring: VendorKeyring, trust: TrustStore) -> None:
    """A list signed with the key-signing certificate (not 'revocations') is refused."""
    private, cert = keyring.signing_key("keys")
    bogus = sign_revocation_list(99, TODAY, ["X-1"], private, cert)
    with pytest.raises(SignatureError, match="lacks purpose 'revocations'"):
        trust.accept(parse_revocation_list(bogus.text()), TODAY)


def test_altered_revocation_list_is_refused(keyring: VendorKeyring, trust: TrustStore) -> None:
    """Removing a revoked id from a signed list breaks its signature."""
    private, cert = keyring.signing_key("revocations")
    text = sign_revocation_list(5, TODAY, ["X-1", "X-2"], private, cert).text().replace("Revoked: X-2\n", "")
    with pytest.raises(SignatureError, match="signature does not match"):
        trust.accept(parse_revocation_list(text), TODAY)


def test_load_trust_without_root_is_a_store_error(tmp_path: Path) -> None:
    """A trust directory without vendor-root.pub raises StoreError naming the file."""
    with pytest.raises(StoreError, match=r"vendor-root\.pub"):
        load_trust(tmp_path)


# ---------------------------------------------------------------------------- issuance


@pytest.mark.parametrize(
    ("plan", "expires"),
    [
        (Plan.SHIP_90D, date(2015, 4, 1)),
        (Plan.ANYTIME_1Y, date(2016, 1, 1)),
        (Plan.BUNDLE_5Y, date(2020, 1, 1)),
        (Plan.TEMPORARY, date(2015, 3, 2)),
    ],
)
def test_plan_expiry(plan: Plan, expires: date) -> None:
    """Plans last 90 days, 1 year, 5 years and 60 days from their start."""
    assert plan_expiry(plan, date(2015, 1, 1)) == expires


def test_feature_keys_do_not_expire_and_ids_are_unique(keyring: VendorKeyring) -> None:
    """A feature key has no expiry unless given; key ids are readable and unique."""
    infos = [
        parse_key(issue_key(keyring, serial=SERIAL, kind="feature", feature="T1", start=TODAY)).info
        for _ in range(20)
    ]
    assert all(i.expires is None and i.key_id.startswith(f"FEA-{SERIAL}-") for i in infos)
    assert len({i.key_id for i in infos}) == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "maintenance", "plan": "temporary"}, "Ceiling"),
        ({"kind": "maintenance"}, "needs a plan"),
        ({"kind": "gold"}, "unknown kind"),
        ({"kind": "maintenance", "plan": "temporary", "ceiling": "99.9"}, "not a release"),
        ({"kind": "users", "users": "100-50"}, "range"),
        ({"kind": "patch", "patch_build": "1.2.3.4"}, "patch build"),
    ],
    ids=["no ceiling", "no plan", "bad kind", "unknown ceiling", "bad range", "unknown patch"],
)
def test_issue_refuses_incoherent_requests(
    keyring: VendorKeyring, kwargs: dict[str, str], message: str
) -> None:
    """Bad issuance requests raise KeyIssueError (BAD_INPUT) saying what is wrong."""
    with pytest.raises(KeyIssueError, match=message):
        issue_key(keyring, serial=SERIAL, start=TODAY, **kwargs)  # type: ignore[arg-type]  # reason: table


@pytest.mark.parametrize(("shipped", "has_key"), [(date(2009, 11, 8), False), (date(2009, 11, 9), True)])
def test_ship_key_starts_with_7_1(keyring: VendorKeyring, shipped: date, has_key: bool) -> None:
    """Servers shipped before 7.1's release date get no maintenance key; later ones a 90-day key (SWM-4)."""
    text = ship_key(keyring, SERIAL, shipped)
    assert (text is not None) is has_key
    if text is not None:
        info = parse_key(text).info
        assert (info.plan, info.starts, info.expires) == (Plan.SHIP_90D, shipped, date(2010, 2, 7))


# ---------------------------------------------------------------------------- keyring and command line


def test_keyring_creation_survives_a_race(tmp_path: Path) -> None:
    """Several processes creating one keyring at once all end up with the same root."""
    code = (
        "import sys; from pathlib import Path; from simulator.keyring import VendorKeyring; "
        "print(VendorKeyring.load_or_create(Path(sys.argv[1])).root_public_hex)"
    )
    target = tmp_path / "vendor"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    roots = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert roots == {VendorKeyring.load_or_create(target).root_public_hex}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_issue_and_revoke(tmp_path: Path) -> None:
    """`keys issue` writes a valid key file, `keys revoke` a list that revokes it."""
    runner = CliRunner()
    ring = str(tmp_path / "vendor")
    out = tmp_path / "k.key"
    result = runner.invoke(
        keys_cli,
        [
            "issue",
            "--serial",
            SERIAL,
            "--kind",
            "maintenance",
            "--plan",
            "bundle-5y",
            "--start",
            "2015-01-01",
            "--keyring",
            ring,
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    key_id = json.loads(result.output)["key_id"]
    trust = TrustStore(VendorKeyring.load_or_create(Path(ring)).root_public)
    assert check_key_text(out.read_text(), trust, SERIAL, TODAY).valid
    result = runner.invoke(keys_cli, ["revoke", key_id, "--keyring", ring, "--out", str(tmp_path / "r.key")])
    assert result.exit_code == 0, result.output
    trust = trust.accept(parse_revocation_list((tmp_path / "r.key").read_text()), TODAY)
    assert check_key_text(out.read_text(), trust, SERIAL, TODAY).reason is Reason.KEY_REVOKED


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    """A bad request prints `error: REASON: message` on stderr and exits 1, no traceback."""
    result = CliRunner().invoke(
        keys_cli,
        [
            "issue",
            "--serial",
            SERIAL,
            "--kind",
            "maintenance",
            "--plan",
            "temporary",
            "--start",
            "2015-01-01",
            "--keyring",
            str(tmp_path / "vendor"),
            "--out",
            str(tmp_path / "k.key"),
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: BAD_INPUT: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "k.key").exists()
