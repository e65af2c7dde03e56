"""Shared command-line plumbing for ``allworx-agent``, ``allworx-sim`` and ``allworx-fleet``.

Invariant: a command ends with exit 0 (done), 2 (refused by policy) or 1 (error: bad input, I/O),
each non-zero exit with one line ``error: CODE: message`` on stderr and never a traceback; click's
own usage errors are bad input too, so they exit 1 (not click's default 2, which means "refused").
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from agent.clock import SimClock, parse_now
from agent.lock import server_lock
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
EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2


def fail(reason: str, message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"error: {reason}: {message}", err=True)
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


@contextlib.contextmanager
def changing_server(server_dir: Path) -> Iterator[ServerDir]:
    """Open a server directory for a command that changes it, holding its lock for the block.

    Raises:
        StoreError: not a server directory.
        ServerBusyError: another process (an upgrade, the daemon) holds the lock; nothing was changed.
    """
    server = open_server(server_dir)
    with server_lock(server.root):
        yield server


def clock_for(now: str | None) -> SimClock:
    """The clock of one command: starts at ``--now`` (or real now); simulated durations take no time."""
    try:
        start = parse_now(now)
    except ValueError:
        fail("BAD_INPUT", f"--now {now!r} is not a date (YYYY-MM-DD)")
    return SimClock(start, speed=float("inf"))


def emit(document: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    """Print ``document`` as JSON or as text for a person."""
    click.echo(json.dumps(document, indent=2) if as_json else text(document))
