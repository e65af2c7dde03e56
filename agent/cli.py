"""``allworx-agent``: the local administrator's command line.

Every command takes ``--server-dir``, ``--json`` (one JSON document on stdout) and ``--now`` (the
simulated clock). Exit codes: 0 done, 2 refused by policy, 1 error (bad input, I/O, and a key or
revocation list file that cannot be parsed: ``KEY_FORMAT_INVALID``) — each with a one-line
``error: CODE: message`` on stderr and never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from agent.cliutil import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    AllworxGroup,
    changing_server,
    clock_for,
    emit,
    fail,
    guarded,
    open_server,
    read_key_text,
    server_options,
    version_option,
)
from agent.documents import KeyReport, PlanReport, UpgradeReport, Wire
from agent.logs import configure_logging
from agent.planner import plan as make_plan
from agent.results import UpgradeResult
from agent.status import StatusDocument, status_document
from agent.store import ServerDir, key_report, key_reports
from agent.upgrader import Upgrader
from common.errors import KeyFormatError, VerificationError
from common.reasons import Reason
from releases.catalog import default_catalog


@click.group(cls=AllworxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("allworx-agent")
@click.option("--log-json", is_flag=True, help="Structured logs as JSON on stderr (production).")
@click.option("-v", "--verbose", is_flag=True, help="Show the agent's logs on stderr.")
def main(log_json: bool, verbose: bool) -> None:
    """The Allworx upgrade agent: status, plans, upgrades and keys of one server."""
    configure_logging(json_logs=log_json, verbose=verbose)


def _status_text(doc: StatusDocument) -> str:
    lines = [
        f"server   {doc.serial}  (Allworx {doc.model}, site {doc.site})",
        f"release  {doc.release}  (build {doc.build}, database schema {doc.db_schema})",
        f"state    {doc.state}",
        f"phones   firmware {doc.phone_firmware} offered",
    ]
    return "\n".join([*lines, _keys_text(doc.keys)])


def _keys_text(keys: tuple[KeyReport, ...]) -> str:
    lines = ["keys:" if keys else "keys:    none installed"]
    for key in keys:
        what = key.plan or key.feature or key.users or key.patch_build or ""
        verdict = "valid" if key.valid else f"NOT VALID ({key.reason}: {key.message})"
        lines.append(f"  {key.kind or '?':<12} {what:<12} {key.starts} .. {key.expires}  {verdict}")
    return "\n".join(lines)


@main.command()
@server_options
@guarded
def status(server_dir: Path, as_json: bool, now: str | None) -> None:
    """Show the server's release, database schema, state and keys."""
    server = open_server(server_dir)
    emit(status_document(server, clock_for(now).now()), as_json, _status_text)


def _plan_text(doc: PlanReport) -> str:
    lines = [f"plan {doc.from_release} -> {doc.to}: ends on {doc.final_release}"]
    for step in doc.steps:
        tail = f"  {step.reason} ({step.rule}): {step.message}" if step.outcome == "refused" else ""
        lines.append(f"  {step.release:<5} {step.outcome}{tail}")
    return "\n".join(lines)


@main.command()
@server_options
@click.option("--to", "target", required=True, help="The release to reach, e.g. 8.0.")
@guarded
def plan(server_dir: Path, as_json: bool, now: str | None, target: str) -> None:
    """Show the chain of single steps to a release and each step's verdict; change nothing."""
    server = open_server(server_dir)
    moment = clock_for(now).now()
    result = make_plan(default_catalog(), server.facts(), server.key_checks(moment), target, moment)
    emit(result.report(), as_json, _plan_text)
    if result.refusal:
        fail(result.refusal.reason.value, result.refusal.message, EXIT_REFUSED)
    sys.exit(EXIT_OK)


def _result_text(doc: UpgradeReport) -> str:
    lines = [f"{doc.from_release} -> {doc.to}: now on {doc.final_release} ({doc.outcome})"]
    for step in doc.steps:
        tail = f"  {step.reason} ({step.rule}): {step.message}" if step.reason is not None else ""
        lines.append(f"  {step.release:<5} {step.outcome}{tail}")
    return "\n".join(lines)


def run_upgrade(server_dir: Path, as_json: bool, now: str | None, action: str, target: str) -> None:
    """Run ``upgrade`` or ``install`` with a progress display, print the result, exit."""
    from agent.progress import ProgressView

    clock = clock_for(now)
    view = ProgressView(enabled=not as_json and sys.stderr.isatty())

    async def go(server: ServerDir) -> UpgradeResult:
        upgrader = Upgrader(server, default_catalog(), clock, on_event=view.on_event)
        with view:
            if action == "install":
                return await upgrader.install(target)
            return await upgrader.upgrade(target)

    with changing_server(server_dir) as server:
        result = asyncio.run(go(server))
    emit(result.report(), as_json, _result_text)
    code = {"succeeded": EXIT_OK, "rejected": EXIT_REFUSED}.get(result.outcome, EXIT_ERROR)
    if code != EXIT_OK:
        last = result.steps[-1].report()
        click.echo(f"error: {last.reason}: {last.message}", err=True)
    sys.exit(code)


@main.command()
@server_options
@click.option("--to", "target", required=True, help="The release to reach, e.g. 8.0.")
@guarded
def upgrade(server_dir: Path, as_json: bool, now: str | None, target: str) -> None:
    """Upgrade step by step to a release; stop at the first refusal on the last committed release."""
    run_upgrade(server_dir, as_json, now, "upgrade", target)


@main.command()
@server_options
@click.option("--release", "release", required=True, help="Exactly the release to install, e.g. 7.2.")
@guarded
def install(server_dir: Path, as_json: bool, now: str | None, release: str) -> None:
    """Install exactly one release image (as an administrator uploading it), judged by the same rules."""
    run_upgrade(server_dir, as_json, now, "install", release)


@main.group()
def keys() -> None:
    """Install and list software keys."""


@keys.command("install")
@server_options
@click.argument("key_file", type=click.Path(path_type=Path))
@guarded
def keys_install(server_dir: Path, as_json: bool, now: str | None, key_file: Path) -> None:
    """Verify a key file and install it; a refused key changes nothing.

    Exit 2 when the key is refused (wrong serial, bad signature, expired, revoked); exit 1 when the
    file is not a key at all (``KEY_FORMAT_INVALID``) or cannot be read (``BAD_INPUT``).
    """
    text = read_key_text(key_file)
    with changing_server(server_dir) as server:
        check = server.install_key(text, clock_for(now).now())
    installed = check.valid or (check.reason is not None and check.reason.value == "KEY_NOT_YET_VALID")
    document = InstalledKey(**dict(key_report(check)), installed=installed)
    emit(
        document,
        as_json,
        lambda d: (
            f"installed {d.kind} key {d.key_id}" if d.installed else f"refused: {d.reason}: {d.message}"
        ),
    )
    if not document.installed:
        malformed = document.reason == Reason.KEY_FORMAT_INVALID.value
        fail(str(document.reason), str(document.message), EXIT_ERROR if malformed else EXIT_REFUSED)


@keys.command("install-revocations")
@server_options
@click.argument("list_file", type=click.Path(path_type=Path))
@guarded
def keys_install_revocations(server_dir: Path, as_json: bool, now: str | None, list_file: Path) -> None:
    """Verify the vendor's revocation list and install it if newer (rule SWM-2: revoked keys stop counting).

    Exit 2 when the list is refused (not the vendor's, or not newer than the installed one); exit 1
    when the file is not a revocation list (``KEY_FORMAT_INVALID``) or cannot be read. The installed
    list and keys are then unchanged. Installing the same list again is a no-op.
    """
    text = read_key_text(list_file)
    today = clock_for(now).now().date()
    with changing_server(server_dir) as server:
        before = server.trust()
        try:
            trust = server.install_revocations(text, today)
        except KeyFormatError as exc:
            fail(exc.reason.value, str(exc))
        except VerificationError as exc:
            fail(exc.reason.value, str(exc), EXIT_REFUSED)
        installed = trust.revocation_sequence != before.revocation_sequence
        held = server.installed_keys()
    now_revoked = sorted(k.info.key_id for k in held if k.info.key_id in trust.revoked)
    emit(
        RevocationsInstalled(
            installed=installed,
            sequence=trust.revocation_sequence,
            revoked_count=len(trust.revoked),
            installed_keys_revoked=tuple(now_revoked),
        ),
        as_json,
        lambda d: (
            f"{'installed' if d.installed else 'already installed:'} revocation list {d.sequence} "
            f"({d.revoked_count} revoked keys); installed keys now revoked: "
            f"{', '.join(d.installed_keys_revoked) or 'none'}"
        ),
    )


@keys.command("list")
@server_options
@guarded
def keys_list(server_dir: Path, as_json: bool, now: str | None) -> None:
    """List installed keys with their validity today."""
    server = open_server(server_dir)
    keys = key_reports(server.key_checks(clock_for(now).now()))
    emit(KeyList(keys=keys), as_json, lambda d: _keys_text(d.keys))


class InstalledKey(KeyReport):
    """``keys install --json``: the key's check, and whether it was installed."""

    installed: bool


class RevocationsInstalled(Wire):
    """``keys install-revocations --json``."""

    installed: bool
    sequence: int
    revoked_count: int
    installed_keys_revoked: tuple[str, ...]


class KeyList(Wire):
    """``keys list --json``."""

    keys: tuple[KeyReport, ...]


from agent.mqtt.cli import config_group as _config_group  # noqa: E402  # reason: the daemon commands register last
from agent.mqtt.cli import run as _run  # noqa: E402  # reason: the daemon command registers itself last

main.add_command(_run, "run")
main.add_command(_config_group, "config")


if __name__ == "__main__":
    main()
