"""Shared command-line plumbing for ``allworx-agent``, ``allworx-sim`` and ``allworx-fleet``.

Invariant: a command ends with exit 0 (done), 2 (refused by policy) or 1 (error: bad input, I/O),
each non-zero exit with a line ``error: CODE: message`` on stderr (one per problem of a malformed
file) and never a traceback; click's own usage errors are bad input too, so they exit 1 (not
click's default 2, which means "refused").
Besides those lines, stderr may carry lines starting ``warning:`` (see :func:`warn`) and the
agent's log lines (``-v``, or warnings it logs on its own). Errors raised inside an asyncio task
group arrive as an exception group: the guard reports the first real error inside it. An error of
no known kind is a bug: ``error: INTERNAL: ...`` (exit 1); ``ALLWORX_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from agent.clock import SimClock, parse_now
from agent.documents import Wire
from agent.fileio import read_bounded
from agent.lock import server_lock
from agent.store import ServerDir
from common.errors import AllworxError, StoreError

DEBUG_VARIABLE = "ALLWORX_DEBUG"
PASSWORD_VARIABLE = "ALLWORX_MQTT_PASSWORD"  # noqa: S105  # reason: a variable name, not a password
MAX_PASSWORD_FILE = 4096  # bytes: a password file holds one line


class AllworxGroup(click.Group):
    """A click group whose usage errors are ``error: BAD_INPUT: ...`` and exit 1."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]  # reason: click's overloads; we always run standalone
        """Run the command line, mapping usage errors to exit 1 and any escaped error to one line."""
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" ({exc.ctx.command_path} --help)" if exc.ctx else ""
            fail("BAD_INPUT", exc.format_message() + hint)
        except click.exceptions.Abort:
            fail("CANCELLED", "aborted")
        except click.ClickException as exc:
            fail("BAD_INPUT", exc.format_message())
        except Exception as exc:  # the last guard before a traceback
            report(exc)


F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D", bound=Wire | Mapping[str, Any])
EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2


def fail(reason: str, message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: REASON: message`` on stderr (a line each for a message of several) and exit."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {reason}: {line}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    """Print one ``warning: message`` line on stderr (the command goes on)."""
    click.echo(f"warning: {message}", err=True)


def root_cause(exc: BaseException) -> BaseException:
    """The error an exception group stands for: its first member that is not a cancellation."""
    while isinstance(exc, BaseExceptionGroup):
        members = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (members or list(exc.exceptions))[0]
    return exc


def error_line(exc: BaseException) -> tuple[str, str] | None:
    """The ``(CODE, message)`` of an error a command can meet, or None for a bug."""
    exc = root_cause(exc)
    if isinstance(exc, AllworxError):
        return exc.reason.value, str(exc)
    if isinstance(exc, TimeoutError):
        return "TIMEOUT", str(exc) or "no answer in time"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return "BAD_INPUT", f"{where}{exc.strerror or exc}"
    if isinstance(exc, (ValueError, OverflowError)):
        return "BAD_INPUT", str(exc)
    return None


def report(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one ``error:`` line and exit 1 (``INTERNAL`` when it is of no known kind)."""
    found = error_line(exc)
    if found is not None:
        fail(*found)
    if os.environ.get(DEBUG_VARIABLE):
        raise exc
    cause = root_cause(exc)
    fail("INTERNAL", f"{type(cause).__name__}: {cause} (a bug; {DEBUG_VARIABLE}=1 shows where)")


def guarded(func: F) -> F:
    """Turn the product's errors (also inside exception groups) into one line and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if error_line(exc) is None:
                raise
            report(exc)

    return wrapper  # type: ignore[return-value]  # reason: functools.wraps keeps the signature


class Real(click.FloatRange):
    """A float in a range that is a number: never ``nan``, and ``inf`` only when allowed."""

    name = "number"

    def __init__(self, *args: Any, allow_inf: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_inf = allow_inf

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse and check ``value``."""
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.allow_inf):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def positive(*, allow_inf: bool = False) -> Real:
    """A number above 0 (seconds, speeds, rates)."""
    return Real(min=0, min_open=True, allow_inf=allow_inf)


FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)


class Day(click.ParamType):  # type: ignore[type-arg]  # reason: generic only from click 8.2; 8.1 is allowed
    """A calendar day ``YYYY-MM-DD`` between 1970 and 2999 (dates beyond overflow key arithmetic)."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse and check ``value``."""
        if isinstance(value, date):
            return value
        try:
            day = date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date like 2015-09-08", param, ctx)
        if not FIRST_DAY <= day <= LAST_DAY:
            self.fail(f"{value!r} is not between {FIRST_DAY} and {LAST_DAY}", param, ctx)
        return day


DAY = Day()


class DayOrInstant(Day):
    """A calendar day as :class:`Day`, or an ISO 8601 instant with its UTC offset (``...T18:05:00Z``)."""

    name = "YYYY-MM-DD|INSTANT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse and check ``value``: a date, or an aware instant on a day :class:`Day` accepts."""
        if isinstance(value, date):
            return value
        text = str(value)
        if "T" not in text.upper():
            return super().convert(text, param, ctx)
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not an instant like 2015-09-08T18:05:00Z", param, ctx)
        if instant.utcoffset() is None:
            self.fail(f"{value!r} has no UTC offset (end it with Z or +00:00)", param, ctx)
        if not FIRST_DAY <= instant.astimezone(UTC).date() <= LAST_DAY:
            self.fail(f"{value!r} is not between {FIRST_DAY} and {LAST_DAY}", param, ctx)
        return instant


DAY_OR_INSTANT = DayOrInstant()


class _TypedSecret(click.Option):
    """An option whose value, typed on the command line, shows in the process list: warn then."""

    def consume_value(self, ctx: click.Context, opts: Any) -> tuple[Any, ParameterSource]:
        """Take the value as click does; warn when it came from the command line."""
        value, source = super().consume_value(ctx, opts)
        if source is ParameterSource.COMMANDLINE:
            warn(f"--password shows in the process list; prefer {PASSWORD_VARIABLE} or --password-file")
        return value, source


def password_options(func: F) -> F:
    """``--password`` (warned against: it shows in the process list) and ``--password-file``."""
    func = click.option(
        "--password-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="A file whose first line is the broker password (preferred).",
    )(func)
    return click.option(
        "--password",
        cls=_TypedSecret,
        default=None,
        envvar=PASSWORD_VARIABLE,
        help=f"Broker password (better: {PASSWORD_VARIABLE} or --password-file).",
    )(func)


def check_private(path: str | Path, what: str) -> None:
    """Refuse a secret file (a client key, a password file) that the group or others may read.

    Raises:
        ValueError: the file's mode grants anything to group or others, or it cannot be examined.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"cannot examine the {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(
            f"the {what} {path} is open to group or others (mode {mode & 0o777:04o}); chmod 600 {path}"
        )


def check_regular(path: str | Path, what: str) -> None:
    """Refuse a file handed to a library that reads it without bounds (a TLS file to ssl): a FIFO
    would block it for ever, a device feed it without end.

    Raises:
        ValueError: ``path`` is not a regular file (or a link to one), or cannot be examined.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"cannot examine the {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"the {what} {path} is not a regular file")


def read_password(password: str | None, password_file: Path | None) -> str | None:
    """The broker password from ``--password``/the variable or from the first line of ``--password-file``.

    Raises:
        ValueError: both are given, the file is open to group or others, or it cannot be read as text.
    """
    if password_file is None:
        return password
    if password is not None:
        raise ValueError(f"give --password-file or --password ({PASSWORD_VARIABLE}), not both")
    check_private(password_file, "password file")
    try:  # bounded and non-blocking: a FIFO or a device named here is refused, never waited on
        lines = read_bounded(password_file, MAX_PASSWORD_FILE).decode("utf-8").splitlines()
    except (OSError, StoreError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the password file {password_file}: {exc}") from exc
    return lines[0] if lines else ""


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


def read_key_text(path: Path) -> str:
    """The text of a key or revocation list file a user names (exit 1 with a reason code when it is
    missing, not a regular file, larger than any key, or not text)."""
    from agent.armor import MAX_TEXT
    from agent.fileio import read_bounded

    try:
        data = read_bounded(path, 4 * MAX_TEXT)
    except FileNotFoundError:
        fail("BAD_INPUT", f"cannot read {path}: no such file")
    except StoreError as exc:
        fail("BAD_INPUT", str(exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail("KEY_FORMAT_INVALID", f"{path} is not a text file: {exc}")
