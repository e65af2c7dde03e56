"""Shared command-line plumbing for ``allworx-agent``, ``allworx-sim`` and ``allworx-fleet``.

Invariant: a command ends with exit 0 (done), 2 (refused by policy) or 1 (error: bad input, I/O),
each non-zero exit with a line ``error: CODE: message`` on stderr (one per problem of a malformed
file) and never a traceback; click's own usage errors are bad input too, so they exit 1 (not
click's default 2, which means "refused").
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from agent.clock import SimClock, parse_now
from agent.documents import Wire
from agent.store import ServerDir
from common.errors import AllworxError


class AllworxGroup(click.Group):
    """A click group whose usage errors are ``error: BAD_INPUT: ...`` and exit 1."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]  # reason: click's overloads; we always run standalone
        """Run the command line, mapping usage errors to exit 1."""
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" ({exc.ctx.command_path} --help)" if exc.ctx else ""
            fail("BAD_INPUT", exc.format_message() + hint)
        except click.exceptions.Abort:
            fail("CANCELLED", "aborted")
        except click.ClickException as exc:
            fail("BAD_INPUT", exc.format_message())


F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D", bound=Wire | Mapping[str, Any])
EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2


def fail(reason: str, message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: REASON: message`` on stderr (a line each for a message of several) and exit."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {reason}: {line}", err=True)
    sys.exit(code)


def guarded(func: F) -> F:
    """Turn the product's errors into one line and exit 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AllworxError as exc:
            fail(exc.reason.value, str(exc))
        except (OSError, ValueError) as exc:
            fail("BAD_INPUT", str(exc))

    return wrapper  # type: ignore[return-value]  # reason: functools.wraps keeps the signature


def server_options(func: F) -> F:
    """The options every command takes."""
    func = click.option(
        "--server-dir",
        "server_dir",
        required=True,
        type=click.Path(path_type=Path),
        help="The server directory (a lab box's or a virtual server's).",
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)
    return click.option("--now", default=None, help="The simulated date (YYYY-MM-DD); default: real time.")(
        func
    )


def open_server(server_dir: Path) -> ServerDir:
    """Open a server directory or fail with a clear message."""
    server = ServerDir(server_dir)
    server.check_exists()
    return server


def clock_for(now: str | None) -> SimClock:
    """The clock of one command: starts at ``--now`` (or real now); simulated durations take no time."""
    try:
        start = parse_now(now)
    except ValueError:
        fail("BAD_INPUT", f"--now {now!r} is not a date (YYYY-MM-DD)")
    return SimClock(start, speed=float("inf"))


def emit(document: D, as_json: bool, text: Callable[[D], str]) -> None:
    """Print ``document`` as JSON or as text for a person.

    ``document`` is a model of :mod:`agent.documents`, or a plain JSON object (the JSON edge of
    the simulator's commands).
    """
    data = document.wire() if isinstance(document, Wire) else document
    click.echo(json.dumps(data, indent=2) if as_json else text(document))


def version_option(prog: str) -> Callable[[F], F]:
    """``--version``: the package version and the newest release of the packaged catalogue."""

    def message() -> str:
        from importlib.metadata import PackageNotFoundError, version

        from releases.catalog import default_catalog

        try:
            package = version("allworx-upgrade-agent")
        except PackageNotFoundError:  # run from a source tree that was never installed
            package = "unknown"
        newest = default_catalog().releases[-1]
        return f"{prog} {package} (catalogue up to release {newest.version}, build {newest.build})"

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(message())
            ctx.exit()

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help="Print the version and the catalogue's newest release, then exit.",
    )
