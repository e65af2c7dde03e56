"""``allworx-sim vendor|migrate|site``: the vendor desk on the command line.

Every command takes ``--json`` (one JSON document on stdout) and ``--now`` (the simulated clock);
commands touching orders take ``--desk`` (default ``$ALLWORX_SIM_HOME/desk``) and first deliver
every key due by ``--now`` (rule XFER-1). Exit codes: 0 done, 2 refused by the vendor (a reason
code), 1 bad input or I/O; both failures print one line ``error: CODE: message`` on stderr, never
a traceback (bad flags included).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.cliutil import EXIT_REFUSED, changing_server, clock_for, emit, fail, guarded
from releases.catalog import default_catalog
from simulator.keyring import VendorKeyring
from simulator.vendor.desk import Desk, default_desk_dir
from simulator.vendor.errors import VendorRefusedError
from simulator.vendor.plans import PurchaseOption
from simulator.vendor.tables import OrderType

F = TypeVar("F", bound=Callable[..., Any])


class _Command(click.Command):
    """A command whose usage errors are one ``error: BAD_INPUT`` line and exit 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            fail("BAD_INPUT", exc.format_message())


class _Group(click.Group):
    """A group whose commands (and unknown command names) report usage errors the same way."""

    command_class = _Command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            click.echo(ctx.get_help())
            ctx.exit(0)
        except click.UsageError as exc:
            fail("BAD_INPUT", exc.format_message())

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            fail("BAD_INPUT", exc.format_message())


def refusals(func: F) -> F:
    """Turn a vendor refusal into exit 2 (with a JSON document under ``--json``), other errors into 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VendorRefusedError as exc:
            if kwargs.get("as_json"):
                click.echo(json.dumps({"refused": True, **exc.refusal.as_dict()}, indent=2))
            fail(exc.reason.value, str(exc), EXIT_REFUSED)

    return guarded(wrapper)  # type: ignore[return-value]  # reason: functools.wraps keeps the signature


def common(func: F) -> F:
    """``--json``, ``--now``, ``--desk`` and ``--keyring``."""
    func = click.option(
        "--keyring",
        "keyring_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The vendor keyring folder (default: $ALLWORX_SIM_HOME/vendor).",
    )(func)
    func = click.option(
        "--desk",
        "desk_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The desk's order folder (default: $ALLWORX_SIM_HOME/desk).",
    )(func)
    func = click.option("--now", default=None, help="The simulated date (YYYY-MM-DD); default: real time.")(
        func
    )
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def open_desk(desk_dir: Path | None, keyring_dir: Path | None, now: str | None) -> tuple[Desk, datetime]:
    """The desk and the instant of this command; keys due by then are delivered first (XFER-1)."""
    moment = clock_for(now).now()
    desk = Desk(VendorKeyring.load_or_create(keyring_dir), default_catalog(), desk_dir or default_desk_dir())
    desk.deliver(moment)
    return desk, moment


TYPE = click.argument("kind", metavar="TYPE", type=click.Choice([t.value for t in OrderType]))
KEY_TRANSFER = click.option(
    "--key-transfer", is_flag=True, help="Pay the optional key transfer fee (XFER-1)."
)
NOT_FUNCTIONAL = click.option("--not-functional", is_flag=True, help="The old server does not work.")


@click.group("vendor", cls=_Group)
def vendor() -> None:
    """The vendor desk: quotes, trade orders, returns, invoices and plans."""


def _money(value: int) -> str:
    return f"${value:,}"


def _quote_text(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['type']} {doc['old_model']} -> {doc['new_model']}: cat. {doc['catalog_number']}, "
        f"partner {_money(doc['partner_price'])}, MSRP {_money(doc['msrp'])}"
    ]
    if doc["credit"]:
        lines.append(f"  trade-in value (35% of list, included in the price): {_money(doc['credit'])}")
    if doc["free_user_key"]:
        lines.append(f"  free user key: {doc['free_user_key']}")
    if doc["key_transfer"]:
        lines.append(
            f"  key transfer: cat. {doc['transfer_catalog_number']}, partner {_money(doc['transfer_fee'])}, "
            f"MSRP {_money(doc['transfer_fee_msrp'])}"
        )
    lines.append(f"  total: partner {_money(doc['total_partner'])}, MSRP {_money(doc['total_msrp'])}")
    return "\n".join(lines)


@vendor.command("quote")
@TYPE
@click.option("--from", "old_model", default=None, help="The old server's model (or --old-dir).")
@click.option("--old-dir", type=click.Path(path_type=Path), default=None, help="The old server's directory.")
@click.option("--to", "new_model", required=True, help="The new Connect model.")
@KEY_TRANSFER
@NOT_FUNCTIONAL
@common
@refusals
def quote(
    *,
    kind: str,
    old_model: str | None,
    old_dir: Path | None,
    new_model: str,
    key_transfer: bool,
    not_functional: bool,
    as_json: bool,
    now: str | None,
    desk_dir: Path | None,
    keyring_dir: Path | None,
) -> None:
    """Price a trade-in or trade-up from the vendor's schedules (exit 2 if not eligible)."""
    from agent.store import ServerDir

    if (old_model is None) == (old_dir is None):
        fail("BAD_INPUT", "give exactly one of --from MODEL or --old-dir DIR")
    model = old_model if old_model is not None else ServerDir(old_dir or Path()).identity().model
    desk = Desk(VendorKeyring.load_or_create(keyring_dir), default_catalog(), desk_dir or default_desk_dir())
    result = desk.quote(kind, model, new_model, key_transfer=key_transfer, functional=not not_functional)
    if result.refusal is not None:
        raise VendorRefusedError(result.refusal)
    emit(result.as_dict(), as_json, _quote_text)


def _order_text(doc: dict[str, Any]) -> str:
    lines = [
        f"order {doc['order_id']}: {doc['type']} {doc['old_model']} {doc['old_serial']} -> "
        f"{doc['new_model']} {doc['new_serial']} on {doc['new_release']} at {doc['new_server_dir']}",
        f"  cat. {doc['catalog_number']}: paid {_money(doc['paid'])} (partner); "
        f"return the old server by {doc['return_deadline']}",
    ]
    for d in doc["deliveries"]:
        state = f"installed {d['delivered_at']}" if d["delivered_at"] else f"available {d['available_at']}"
        lines.append(f"  key {d['kind']} {d['what']} ({d['source']}): {state}")
    if doc["penalty"]:
        lines.append(f"  penalty owed: {_money(doc['penalty'])}")
    return "\n".join(lines)


@vendor.command("order")
@TYPE
@click.option("--old-dir", type=click.Path(path_type=Path), required=True, help="The old server's directory.")
@click.option("--to", "new_model", required=True, help="The new Connect model.")
@click.option(
    "--new-dir", type=click.Path(path_type=Path), required=True, help="Where the new server is made."
)
@KEY_TRANSFER
@NOT_FUNCTIONAL
@common
@refusals
def order(
    *,
    kind: str,
    old_dir: Path,
    new_model: str,
    new_dir: Path,
    key_transfer: bool,
    not_functional: bool,
    as_json: bool,
    now: str | None,
    desk_dir: Path | None,
    keyring_dir: Path | None,
) -> None:
    """Place a trade order: the new server is made at once; transferred keys follow within 24 hours."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    placed = desk.order(
        kind,
        old_dir,
        new_model,
        now=moment,
        new_server_dir=new_dir,
        key_transfer=key_transfer,
        functional=not not_functional,
    )
    emit(placed.as_dict(), as_json, _order_text)


@vendor.command("return")
@click.argument("order_id")
@common
@refusals
def return_(
    *, order_id: str, as_json: bool, now: str | None, desk_dir: Path | None, keyring_dir: Path | None
) -> None:
    """Record the old server of ORDER_ID as returned (within 30 days avoids the penalty)."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    emit(desk.return_server(order_id, moment).as_dict(), as_json, _order_text)


def _invoice_text(doc: dict[str, Any]) -> str:
    lines = [
        f"invoice for {doc['order_id']} on {doc['issued']}: {doc['status']} "
        f"(return deadline {doc['return_deadline']})"
    ]
    lines += [
        f"  {ln['catalog_number'] or '':<8} {_money(ln['amount']):>8}  {ln['description']}"
        for ln in doc["lines"]
    ]
    lines.append(f"  paid {_money(doc['paid'])}; due {_money(doc['due'])}")
    return "\n".join(lines)


@vendor.command("invoice")
@click.argument("order_id")
@common
@refusals
def invoice(
    *, order_id: str, as_json: bool, now: str | None, desk_dir: Path | None, keyring_dir: Path | None
) -> None:
    """Invoice ORDER_ID: what was paid, and the penalty once 30 days pass without the old server."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    emit(desk.invoice(order_id, moment).as_dict(), as_json, _invoice_text)


@vendor.command("deliver")
@common
@refusals
def deliver(*, as_json: bool, now: str | None, desk_dir: Path | None, keyring_dir: Path | None) -> None:
    """Install every key due by --now on its new server; list what is still pending."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    pending = [{"order_id": oid, **d.as_dict(with_text=False)} for oid, d in desk.pending_deliveries()]
    emit(
        {"now": moment.isoformat(), "pending": pending},
        as_json,
        lambda doc: f"{len(doc['pending'])} key(s) still pending",
    )


@vendor.command("purchase")
@click.option("--server-dir", type=click.Path(path_type=Path), required=True, help="The server directory.")
@click.option(
    "--option",
    "option",
    required=True,
    type=click.Choice([o.value for o in PurchaseOption]),
    help="hw-5y or bundle-5y (within 90 days of purchase), anytime-1y (any time).",
)
@common
@refusals
def purchase(
    *,
    server_dir: Path,
    option: str,
    as_json: bool,
    now: str | None,
    desk_dir: Path | None,
    keyring_dir: Path | None,
) -> None:
    """Buy a warranty or maintenance plan for a server (SWM-5); its key is installed on it."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    with changing_server(server_dir):  # its key is installed: no upgrade or daemon may run meanwhile
        bought = desk.purchase(server_dir, option, moment)
    emit(
        bought.as_dict(),
        as_json,
        lambda d: (
            f"bought {d['option']} on {d['bought']}: hardware until {d['hardware_until'] or '(unchanged)'}, "
            f"key {d['key_id'] or '(none)'} {d['key_starts'] or ''}..{d['key_expires'] or ''}"
        ),
    )


@vendor.command("temp-key")
@click.option(
    "--server-dir", type=click.Path(path_type=Path), required=True, help="The old server's directory."
)
@click.option("--ceiling", default="8.0", show_default=True, help="The highest release the key allows.")
@common
@refusals
def temp_key(
    *,
    server_dir: Path,
    ceiling: str,
    as_json: bool,
    now: str | None,
    desk_dir: Path | None,
    keyring_dir: Path | None,
) -> None:
    """Issue and install a temporary upgrade key so an old server can reach 8.0 for Migrate (MIG-2)."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    with changing_server(server_dir):
        info = desk.temporary_key(server_dir, moment, ceiling)
    doc = {
        "key_id": info.key_id,
        "serial": info.serial,
        "ceiling": info.ceiling,
        "starts": info.starts.isoformat() if info.starts else None,
        "expires": info.expires.isoformat() if info.expires else None,
    }
    emit(
        doc,
        as_json,
        lambda d: f"installed temporary key {d['key_id']} up to {d['ceiling']} until {d['expires']}",
    )


@click.command("migrate", cls=_Command)
@click.option("--from", "old_dir", type=click.Path(path_type=Path), required=True, help="The old server.")
@click.option("--to", "new_dir", type=click.Path(path_type=Path), required=True, help="The new server.")
@common
@refusals
def migrate(
    *,
    old_dir: Path,
    new_dir: Path,
    as_json: bool,
    now: str | None,
    desk_dir: Path | None,
    keyring_dir: Path | None,
) -> None:
    """Allworx Migrate: copy configuration and data (never keys) to a new server; both on 8.0+ (MIG-1)."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    with changing_server(old_dir), changing_server(new_dir):
        report = desk.migrate(old_dir, new_dir, moment)
    emit(
        report.as_dict(),
        as_json,
        lambda d: (
            f"migrated {d['old_serial']} -> {d['new_serial']}: {len(d['imported'])} user(s) imported, "
            f"{len(d['disabled'])} disabled (limit {d['user_limit']}), {len(d['renamed'])} renamed, "
            f"{len(d['moved_extensions'])} extension(s) moved, {len(d['dropped_phones'])} phone(s) "
            f"dropped; keys copied: 0"
        ),
    )


@click.group("site", cls=_Group)
def site() -> None:
    """Multi-site networks of servers."""


def _site_text(doc: dict[str, Any]) -> str:
    lines = [f"target release {doc['target']}: " + ("all members ready" if doc["ready"] else "NOT ready")]
    for m in doc["members"]:
        steps = " -> ".join(m["steps"]) or "(on target)"
        tail = f"  {m['refusal']['reason']}: {m['refusal']['message']}" if m["refusal"] else ""
        buy = f"  buy {m['buy']}" if m["buy"] else ""
        lines.append(f"  {m['serial']} {m['model']:<5} {m['release']:<5} {steps}{buy}{tail}")
    return "\n".join(lines)


@site.command("check")
@click.argument("server_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--to",
    "target",
    default=None,
    help="A release to reach when it is newer than the newest any member runs (the default target).",
)
@common
@refusals
def site_check(
    *,
    server_dirs: tuple[Path, ...],
    target: str | None,
    as_json: bool,
    now: str | None,
    desk_dir: Path | None,
    keyring_dir: Path | None,
) -> None:
    """Check that every member can reach one release (SITE-1); exit 2 when some cannot yet."""
    desk, moment = open_desk(desk_dir, keyring_dir, now)
    report = desk.site_check(list(server_dirs), moment, target)
    emit(report.as_dict(), as_json, _site_text)
    if not report.ready:
        raise SystemExit(EXIT_REFUSED)
