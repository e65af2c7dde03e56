"""``allworx-sim keys``: the vendor issues and revokes keys.

Errors print one line ``error: REASON_CODE: message`` on stderr and exit 1, never a traceback
(bad flags included: agent/cliutil.py's convention).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import click

from agent.cliutil import DAY, DAY_OR_INSTANT, guarded
from agent.keys import KeyKind, Plan, parse_key, parse_revocation_list
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring


def _keyring(path: Path | None) -> VendorKeyring:
    return VendorKeyring.load_or_create(path)


keyring_option = click.option(
    "--keyring",
    "keyring_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The vendor keyring folder (default: $ALLWORX_SIM_HOME/vendor, created on first use).",
)


@click.group()
def keys() -> None:
    """Issue and revoke software keys (the vendor's side)."""


@keys.command("issue")
@click.option("--serial", required=True, help="The server's serial number.")
@click.option(
    "--kind", required=True, type=click.Choice([k.value for k in KeyKind]), help="What it licenses."
)
@click.option("--plan", type=click.Choice([p.value for p in Plan]), default=None, help="Maintenance plan.")
@click.option(
    "--start",
    type=DAY_OR_INSTANT,
    default=None,
    help="First valid day YYYY-MM-DD, or instant such as 2026-11-30T18:05:00Z (default: today).",
)
@click.option(
    "--expires",
    type=DAY_OR_INSTANT,
    default=None,
    help="Last valid day, or last valid instant with its UTC offset (default: from the plan).",
)
@click.option("--ceiling", default=None, help="Temporary keys: the highest release allowed (e.g. 8.0).")
@click.option("--feature", default=None, help="Feature keys: the feature (e.g. T1).")
@click.option("--users", default=None, help="User expansion keys: the range (e.g. 51-100).")
@click.option("--patch", "patch_build", default=None, help="Patch authorisations: the build (e.g. 7.6.4.9).")
@click.option("--count", type=click.IntRange(min=1), default=1, help="Licence count (keys stack).")
@keyring_option
@click.option(
    "--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Key file to write."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@guarded
def issue(
    *,
    serial: str,
    kind: str,
    plan: str | None,
    start: date | datetime | None,
    expires: date | datetime | None,
    ceiling: str | None,
    feature: str | None,
    users: str | None,
    patch_build: str | None,
    count: int,
    keyring_dir: Path | None,
    out: Path,
    as_json: bool,
) -> None:
    """Issue a signed key for one serial and write it to --out."""
    text = issue_key(
        _keyring(keyring_dir),
        serial=serial,
        kind=kind,
        plan=plan,
        start=start or date.today(),
        ceiling=ceiling,
        feature=feature,
        users=users,
        patch_build=patch_build,
        count=count,
        expires=expires,
    )
    out.write_text(text)
    info = parse_key(text).info
    document = {
        "key_id": info.key_id,
        "kind": info.kind.value,
        "serial": info.serial,
        "plan": info.plan.value if info.plan else None,
        "starts": info.starts.isoformat() if info.starts else None,
        "expires": info.expires.isoformat() if info.expires else None,
        "file": str(out),
    }
    if as_json:
        click.echo(json.dumps(document, sort_keys=True))
    else:
        until = f" until {document['expires']}" if document["expires"] else ""
        click.echo(f"issued {info.kind.value} key {info.key_id} for {serial}{until}: {out}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--today", type=DAY, default=None, help="Issue date of the new list (default: today).")
@keyring_option
@click.option(
    "--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="List file to write."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@guarded
def revoke(key_id: str, today: date | None, keyring_dir: Path | None, out: Path, as_json: bool) -> None:
    """Revoke KEY_ID and write the new signed revocation list to --out."""
    keyring = _keyring(keyring_dir)
    text = keyring.revoke(key_id, today or date.today())
    out.write_text(text)
    revoked = sorted(keyring.revoked())
    if as_json:
        sequence = parse_revocation_list(text).sequence
        click.echo(json.dumps({"revoked": revoked, "sequence": sequence, "file": str(out)}, sort_keys=True))
    else:
        click.echo(f"revoked {key_id}; the list now names {len(revoked)} key(s): {out}")
