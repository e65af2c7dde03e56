"""Every command of the three CLIs, typed with hostile input, ends in one ``error:`` line, never a traceback.

The table holds, per row, the command line as a user types it (placeholders such as ``{server}``
are files and folders made once for the module), the exit code (1 error, 2 refused) and the
reason code of the ``error: CODE: message`` line. All rows run once, as subprocesses in parallel
threads; each test then checks one row. Besides the error line, stderr may only hold ``warning:``
lines and the agent's log lines (agent/cliutil.py); ``scenario run`` prints one ``error:`` line
per problem of a malformed file before its summary (docs/scenarios.md). Commands that wait for a
broker get a short ``--timeout`` and either a closed port on 127.0.0.1 or a real Mosquitto where
no agent answers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import click
import pytest

from simulator.broker import Mosquitto, free_port
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from tests.helpers import tree_hash

ENTRY = {
    "allworx-agent": "from agent.cli import main; main()",
    "allworx-sim": "from simulator.cli import main; main()",
    "allworx-fleet": "from fleet.cli import main; main()",
}
ERROR_LINE = re.compile(r"^error: ([A-Z][A-Z0-9_]*): \S.*$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z? +\[")  # structlog's console lines
SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "down-1-downgrades-refused.toml"
HUGE = "1" + "0" * 30
NOW = "--now=2016-01-01"
HANG = 60  # seconds: a row still running then is a hang (every row should end in a few seconds)


@dataclass(frozen=True)
class Row:
    """One hostile command line and what it must end with."""

    command: str  # "allworx-sim server create": the program and the command's path
    args: tuple[str, ...]
    exit: int
    code: str
    problems: bool = False  # scenario run: one ``error:`` line per problem found, then the summary

    @property
    def name(self) -> str:
        """A test id: the command and its arguments."""
        return " ".join((self.command, *self.args))[:120]


def row(command: str, *args: str, exit_code: int = 1, code: str = "BAD_INPUT", problems: bool = False) -> Row:
    """A table row."""
    return Row(command, args, exit_code, code, problems)


AGENT = "allworx-agent"
SIM = "allworx-sim"
FLEET = "allworx-fleet"
S = "--server-dir={server}"
T = "--timeout=0.5"
B = "--broker={broker}"  # a real Mosquitto where no agent answers
C = "--broker={closed}"  # a closed port on 127.0.0.1
DESK = ("--desk={desk}", "--keyring={keyring}")

ROWS = [
    # ---------------------------------------------------------------- allworx-agent
    row(f"{AGENT} status", "--server-dir={missing}"),
    row(f"{AGENT} status", "--server-dir={empty}"),
    row(f"{AGENT} status", "--server-dir=/dev/null"),
    row(f"{AGENT} status", "--server-dir={dir}"),
    row(f"{AGENT} status", "--server-dir={listserver}"),
    row(f"{AGENT} status", S, "--now=2016-13-01"),
    row(f"{AGENT} status", S, "--now=nan"),
    row(f"{AGENT} plan", S, "--to=8.3", NOW, exit_code=2, code="MAINTENANCE_KEY_REQUIRED"),
    row(f"{AGENT} plan", S, "--to=zz", NOW, exit_code=2, code="UNKNOWN_RELEASE"),
    row(f"{AGENT} plan", S, "--to=8.3", "--now=" + HUGE),
    row(f"{AGENT} plan", "--server-dir={binaryserver}", "--to=8.3"),
    row(f"{AGENT} upgrade", S, "--to=zz", NOW, exit_code=2, code="UNKNOWN_RELEASE"),
    row(f"{AGENT} upgrade", S, "--to=8.0", "--now=2000-01-01", exit_code=2, code="NOT_YET_RELEASED"),
    row(f"{AGENT} upgrade", "--server-dir={dir}", "--to=8.0"),
    row(f"{AGENT} install", S, "--release=7.3", NOW, exit_code=2, code="MUST_INSTALL_7_1_FIRST"),
    row(f"{AGENT} install", S, "--release=7.0", NOW, exit_code=2, code="ALREADY_INSTALLED"),
    row(f"{AGENT} install", S, "--release=-1", NOW, exit_code=2, code="UNKNOWN_RELEASE"),
    row(f"{AGENT} keys install", S, "{empty}", code="KEY_FORMAT_INVALID"),
    row(f"{AGENT} keys install", S, "{binary}", code="KEY_FORMAT_INVALID"),
    row(f"{AGENT} keys install", S, "{text}", code="KEY_FORMAT_INVALID"),
    row(f"{AGENT} keys install", S, "/dev/null"),  # a device, not a regular file: BAD_INPUT
    row(f"{AGENT} keys install", S, "{dir}"),
    row(f"{AGENT} keys install", S, "{missing}"),
    row(f"{AGENT} keys install", S, "{other_key}", NOW, exit_code=2, code="KEY_SERIAL_MISMATCH"),
    row(f"{AGENT} keys install", S, "{other_key}", NOW, "--json", exit_code=2, code="KEY_SERIAL_MISMATCH"),
    row(f"{AGENT} keys install-revocations", S, "{empty}", code="KEY_FORMAT_INVALID"),
    row(f"{AGENT} keys install-revocations", S, "{binary}", code="KEY_FORMAT_INVALID"),
    row(f"{AGENT} keys install-revocations", S, "{other_key}", code="KEY_FORMAT_INVALID"),
    row(f"{AGENT} keys install-revocations", S, "{dir}"),
    row(f"{AGENT} keys list", "--server-dir={missing}"),
    row(f"{AGENT} keys list", S, "--now=yesterday"),
    row(f"{AGENT} run", "--server-dir={missing}", C),
    row(f"{AGENT} run", S, C, "--speed=nan"),
    row(f"{AGENT} run", S, C, "--speed=0"),
    row(f"{AGENT} run", S, C, "--speed=-1"),
    row(f"{AGENT} run", S, "--broker=zz"),
    row(f"{AGENT} run", S, "--broker=mqtt://127.0.0.1:99999"),
    row(f"{AGENT} run", S, C, "--keepalive=0"),
    row(f"{AGENT} run", S, C, "--mqtt-version=4"),
    row(f"{AGENT} run", S, C, "--site=a/b"),
    row(f"{AGENT} run", S, C, "--ca={missing}"),
    row(f"{AGENT} run", S, "--broker={closed_tls}", "--ca={fifo}"),
    row(f"{AGENT} run", S, "--broker={closed_tls}", "--cert={fifo}"),
    row(f"{AGENT} run", S, C, "--password=secret", "--password-file={password}"),
    row(f"{AGENT} run", S, C, "--password-file={binary}"),
    row(f"{AGENT} run", S, C, "--config={missing}", code="CONFIG_INVALID"),
    row(f"{AGENT} run", S, C, "--config={dir}", code="CONFIG_INVALID"),
    row(f"{AGENT} run", S, C, "--config={binary}", code="CONFIG_INVALID"),
    row(f"{AGENT} run", S, C, "--log-level=loud"),
    row(f"{AGENT} run", S, C, "--health-down-after=nan"),
    row(f"{AGENT} config show", "--config={missing}", code="CONFIG_INVALID"),
    row(f"{AGENT} config show", "--config={empty}", "--keepalive=0"),
    row(f"{AGENT} run", S, C, "--password-file={password}"),  # mode 0644: others may read it
    row(f"{AGENT} run", S, C, "--key={password}"),
    row(f"{AGENT} nonsense"),
    # ---------------------------------------------------------------- allworx-sim
    row(f"{SIM} server create", "{new}", "--model=zz", "--release=7.0"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=zz", code="UNKNOWN_RELEASE"),
    row(f"{SIM} server create", "{new}", "--model=731", "--release=7.0", code="MODEL_UNSUPPORTED"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--shipped=9999-12-31"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--shipped=nan"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--call-log-rows=1e23"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--call-log-rows=" + HUGE),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--call-log-rows=1000000000000"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--call-log-rows=-1"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--users=-5"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--users=" + HUGE),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--serial=AWX 00"),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--serial=" + "A" * 200),
    row(f"{SIM} server create", "{new}", "--model=6x", "--release=7.0", "--site=a/b"),
    row(f"{SIM} server create", "{server}", "--model=6x", "--release=7.0"),
    row(f"{SIM} server create", "{empty}/x", "--model=6x", "--release=7.0"),
    row(
        f"{SIM} keys issue",
        "--serial=AWX1",
        "--kind=maintenance",
        "--plan=anytime-1y",
        "--start=9999-12-31",
        "--out={new}",
    ),
    row(f"{SIM} keys issue", "--serial=AWX1", "--kind=zz", "--out={new}"),
    row(f"{SIM} keys issue", "--serial=AWX1", "--kind=maintenance", "--count=0", "--out={new}"),
    row(f"{SIM} keys issue", "--serial=AWX1", "--kind=maintenance", "--plan=anytime-1y", "--out={dir}"),
    row(
        f"{SIM} keys issue",
        "--serial=AWX1",
        "--kind=maintenance",
        "--plan=anytime-1y",
        "--keyring={empty}",
        "--out={new}",
    ),
    row(
        f"{SIM} keys issue",
        "--serial=AWX1",
        "--kind=maintenance",
        "--plan=anytime-1y",
        "--keyring={keyring}",
        "--out={unwritable}",
    ),
    row(f"{SIM} keys revoke", "K-1", "--today=9999-12-31", "--out={new}"),
    row(f"{SIM} keys revoke", "K-1", "--keyring={binarydir}", "--out={new}"),
    row(f"{SIM} releases publish", "--out={new}", "--image-size=1e20"),
    row(f"{SIM} releases publish", "--out={new}", "--image-size=" + HUGE),
    row(f"{SIM} releases publish", "--out={new}", "--image-size=0"),
    row(f"{SIM} releases publish", "--out={unwritable}", "--keyring={keyring}"),
    row(f"{SIM} releases serve", "--dir={missing}", "--port=0"),
    row(f"{SIM} releases serve", "--dir={new}", "--port=70000"),
    row(f"{SIM} attack", "zz", S),
    row(f"{SIM} attack", "freeze", "--server-dir={missing}"),
    row(f"{SIM} attack", "freeze", S, "--now=zz"),
    row(f"{SIM} demo", "--dir={new}", "--speed=0"),
    row(f"{SIM} demo", "--dir={new}", "--speed=-1"),
    row(f"{SIM} demo", "--dir={new}", "--speed=nan"),
    row(f"{SIM} demo", "--dir={new}", "--speed=inf"),
    row(f"{SIM} demo", "--dir={new}", "--servers=0"),
    row(f"{SIM} demo", "--dir={new}", "--broker={closed}", code="BROKER_UNAVAILABLE"),
    row(f"{SIM} demo", "--dir={new}", "--broker=zz"),
    row(f"{SIM} vendor quote", "zz", "--from=6x", "--to=Connect 324", *DESK),
    row(
        f"{SIM} vendor quote",
        "trade-in",
        "--from=731",
        "--to=6x",
        *DESK,
        exit_code=2,
        code="TRADE_NOT_ELIGIBLE",
    ),
    row(f"{SIM} vendor quote", "trade-in", "--old-dir={missing}", "--to=6x", *DESK),
    row(f"{SIM} vendor order", "trade-in", "--old-dir={missing}", "--to=6x", "--new-dir={new}", *DESK),
    row(f"{SIM} vendor return", "ORD-404", *DESK),
    row(f"{SIM} vendor return", "../../etc", *DESK),
    row(f"{SIM} vendor invoice", "ORD-1", *DESK),  # its file holds a JSON list
    row(f"{SIM} vendor invoice", "ORD-2", *DESK),  # its file is not UTF-8
    row(f"{SIM} vendor deliver", "--desk={empty}"),
    row(f"{SIM} vendor deliver", *DESK, "--now=2016-02-30"),
    row(f"{SIM} vendor purchase", "--server-dir={missing}", "--option=hw-5y", *DESK),
    row(f"{SIM} vendor purchase", S, "--option=zz", *DESK),
    row(f"{SIM} vendor temp-key", "--server-dir={missing}", *DESK),
    row(f"{SIM} vendor temp-key", S, "--ceiling=zz", *DESK),
    row(f"{SIM} migrate", "--from={missing}", "--to={missing}", *DESK),
    row(f"{SIM} migrate", "--from={server}", "--to={server}", *DESK),
    row(f"{SIM} site check", "{missing}", *DESK),
    row(f"{SIM} site check", "{server}", "--to=zz", *DESK),
    row(f"{SIM} scenario run", "{missing}", problems=True),
    row(f"{SIM} scenario run", "{dir}", problems=True),
    row(f"{SIM} scenario run", "{binarytoml}", problems=True),
    row(f"{SIM} scenario run", "{empty}", problems=True),
    row(f"{SIM} scenario run", "{scenario}", "--junit={unwritable}"),
    row(f"{SIM} scenario run", "{scenario}", "--jobs=-1"),
    row(f"{SIM} chaos", "--servers=0"),
    row(f"{SIM} chaos", "--servers=" + HUGE),
    row(f"{SIM} chaos", "--workers=100000"),
    row(f"{SIM} chaos", "--dir={empty}"),
    row(f"{SIM} fleet", "--dir={new}", "--shard=5/2", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--shard=1/0", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--shard=-1/2", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--shard=x", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=0", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", "--speed=0"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", "--speed=nan"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", "--failing=2"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", "--offline=nan"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", "--models=zz=1", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", "--releases=7.0=-1", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--config={binary}", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--config={list}", "--build-only"),
    row(f"{SIM} fleet", "--dir={new}", "--servers=1", C, code="BROKER_UNAVAILABLE"),
    row(f"{SIM} broker", "--port=99999"),
    row(f"{SIM} broker", "--port=0"),
    row(f"{SIM} broker", "--port={used}"),
    row(f"{SIM} broker", "--port={used}", "--mosquitto"),
    row(f"{SIM} broker config", "--pki={dir}", "--out={new}"),
    row(f"{SIM} broker config", "--pki={missing}", "--out={new}", "--passwords"),
    row(f"{SIM} broker config", "--pki={dir}", "--out={new}", "--port=0"),
    row(f"{SIM} pki init", "{new}"),
    row(f"{SIM} pki init", "{new}", "--servers=AWX/1"),
    row(f"{SIM} pki init", "{new}", "--servers=AWX1", "--operators=AWX1"),
    row(f"{SIM} pki init", "{text}", "--servers=AWX1"),
    row(f"{SIM} pki init", "{new}", "--fleet={dir}"),
    row(f"{SIM} nonsense"),
    # ---------------------------------------------------------------- allworx-fleet
    row(f"{FLEET} send upgrade", "--site=lab", "--serial=AWX1", "--to=8.0", B, T, code="TIMEOUT"),
    row(f"{FLEET} send upgrade", "--site=lab", "--serial=AWX1", "--to=8.0", C, T, code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} send upgrade", "--site=lab", "--serial=AWX1", "--to=8.0", B, "--wait", "--wait-timeout=-1"),
    row(f"{FLEET} send stage", "--site=lab", "--serial=AWX1", "--to=8.0", B, T, code="TIMEOUT"),
    row(f"{FLEET} send stage", "--site=lab", "--serial=AWX 1", "--to=8.0", B, T),
    row(f"{FLEET} send plan", "--site=lab", "--serial=AWX1", "--to=8.0", B, T, code="TIMEOUT"),
    row(f"{FLEET} send plan", "--site=a/b", "--serial=AWX1", "--to=8.0", B, T),
    row(f"{FLEET} send cancel", "--site=lab", "--serial=AWX1", B, T, code="TIMEOUT"),
    row(f"{FLEET} send cancel", "--site=lab", "--serial=#", B, T),
    row(f"{FLEET} send report", "--site=lab", "--serial=AWX1", B, T, code="TIMEOUT"),
    row(f"{FLEET} send report", "--site=lab", "--serial=AWX1", B, "--timeout=nan"),
    row(f"{FLEET} send report", "--site=lab", "--serial=AWX1", B, "--timeout=0"),
    row(f"{FLEET} send report", "--site=lab", "--serial=AWX1", "--broker=zz", T),
    row(f"{FLEET} send report", "--site=lab", "--serial=AWX1", B, T, "--operator-key={binary}"),
    row(f"{FLEET} send report", "--site=lab", "--serial=AWX1", B, T, "--operator-key={missing}"),
    row(
        f"{FLEET} send install-key",
        "--site=lab",
        "--serial=AWX1",
        B,
        T,
        "{binary}",
        code="KEY_FORMAT_INVALID",
    ),
    row(
        f"{FLEET} send install-key", "--site=lab", "--serial=AWX1", B, T, "{empty}", code="KEY_FORMAT_INVALID"
    ),
    row(f"{FLEET} send install-key", "--site=lab", "--serial=AWX1", B, T, "{dir}"),
    row(f"{FLEET} status", C, code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} status", B, "--site=a/+"),
    row(f"{FLEET} status", B, "--password-file={missing}"),
    row(f"{FLEET} status", "--broker={closed_tls}", "--ca={fifo}"),
    row(f"{FLEET} status", "--broker={closed_tls}", "--cert={fifo}", "--key={fifo}"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--target=zz", "--dry-run", code="UNKNOWN_RELEASE"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--canary=-5", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--batch=abc", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--batch=500%", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--rate=nan", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--max-in-flight=0", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--abort-threshold=5", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--window-opens=2020-01-01", "--dry-run"),
    row(
        f"{FLEET} campaign start",
        "--id=c1",
        B,
        "--window-opens=2020-01-02",
        "--window-closes=2020-01-01",
        "--dry-run",
    ),
    row(f"{FLEET} campaign start", "--id=c1", B, "--networks={list}", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--networks={binary}", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--members={fifo}", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--members={binary}", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--select=serial=@{fifo}", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--now=zz", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=c1", B, "--now=2016-01-01", "--speed=0", "--dry-run"),
    row(f"{FLEET} campaign start", "--id=a/#", B, "--dry-run"),
    row(f"{FLEET} campaign start", "--id=nope", B, "--resume"),
    row(f"{FLEET} campaign start", "--id=c1", C, "--dry-run", code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} campaign status", "--id=nope", B),
    row(f"{FLEET} campaign log", "nope", B),
    row(f"{FLEET} campaign log", "a/#", B),
    row(f"{FLEET} campaign log", "nope", C, code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} campaign report", "nope", B, "--out={dir}/report"),
    row(f"{FLEET} campaign report", "nope", C, "--out={dir}/report", code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} campaign list", C, code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} campaign status", "--id=a/#", B),
    row(f"{FLEET} campaign pause", "--id=nope", B),
    row(f"{FLEET} campaign resume", "--id=nope", B),
    row(f"{FLEET} campaign abort", "--id=nope", B),
    row(f"{FLEET} campaign abort", "--id=nope", C, code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} watch", "--broker={closed}", "--duration=1", code="BROKER_UNAVAILABLE"),
    row(f"{FLEET} watch", B, "--duration=nan"),
    row(f"{FLEET} watch", B, "--duration=-1"),
    row(f"{FLEET} watch", B, "--until-done=a/#"),
    row(f"{FLEET} nonsense"),
]


@dataclass(frozen=True)
class Outcome:
    """What one row's process did."""

    returncode: int
    stdout: str
    stderr: str


def _workspace(base: Path, keyring: VendorKeyring, broker: Mosquitto) -> dict[str, str]:
    """Make the files and folders the placeholders name."""
    server = create_server(base / "server", ServerSpec(model="6x", release="7.0", users=3, call_log_rows=10))
    (base / "dir").mkdir()
    (base / "empty").write_bytes(b"")
    (base / "binary").write_bytes(b"\xff\xfe\x00\x80 not text \xc3\x28")
    (base / "binary").chmod(0o600)  # as a password file it passes the mode check and fails as text
    (base / "text").write_text("garbage\n")
    (base / "list.json").write_text("[1, 2]\n")
    (base / "bad.toml").write_bytes(b"\xff\xfe title = 1")
    (base / "password").write_text("secret\n")
    (base / "other.key").write_text(
        issue_key(
            keyring, serial="AWX999999999", kind="maintenance", plan="anytime-1y", start=date(2016, 1, 1)
        )
    )
    for name, content in (("listserver", b"[]"), ("binaryserver", b"\xff\xfe")):
        (base / name).mkdir()
        (base / name / "identity.json").write_bytes(content)
    orders = base / "desk" / "orders"
    orders.mkdir(parents=True)
    (orders / "ORD-1.json").write_text("[]\n")
    (orders / "ORD-2.json").write_bytes(b"\xff\xfe{")
    (base / "binarydir").mkdir()
    os.mkfifo(base / "fifo", 0o600)  # a reader that opens it blocking waits for ever
    (base / "binarydir" / "root.key").write_bytes(b"\xff\xfe")
    return {
        "server": str(server.root),
        "missing": str(base / "missing"),
        "dir": str(base / "dir"),
        "empty": str(base / "empty"),
        "binary": str(base / "binary"),
        "text": str(base / "text"),
        "list": str(base / "list.json"),
        "binarytoml": str(base / "bad.toml"),
        "password": str(base / "password"),
        "other_key": str(base / "other.key"),
        "listserver": str(base / "listserver"),
        "binaryserver": str(base / "binaryserver"),
        "desk": str(base / "desk"),
        "keyring": str(keyring.path),
        "binarydir": str(base / "binarydir"),
        "unwritable": "/proc/allworx-no-such-dir/out",
        "scenario": str(SCENARIO),
        "broker": broker.url,
        "closed": f"mqtt://127.0.0.1:{free_port()}",
        "closed_tls": f"mqtts://127.0.0.1:{free_port()}",
        "fifo": str(base / "fifo"),
        "used": str(broker.port),
    }


LAST_ATTEMPT = ("update/", "journal", "last_result")  # the agent's record of its last attempt


def _run(one: Row, index: int, places: dict[str, str], base: Path) -> Outcome:
    values = {**places, "new": str(base / "new" / str(index))}
    program, *path = one.command.split()
    argv = [sys.executable, "-c", ENTRY[program], *path, *(a.format(**values) for a in one.args)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=HANG, check=False, env=dict(os.environ), cwd=base
        )
    except subprocess.TimeoutExpired as hung:  # a command that waits for ever fails its row only
        return Outcome(-1, _text(hung.stdout), _text(hung.stderr) + f"\n(still running after {HANG} s)")
    return Outcome(done.returncode, done.stdout, done.stderr)


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


@pytest.fixture(scope="module")
def server_before(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's workspace folder."""
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def outcomes(
    server_before: Path, keyring: VendorKeyring, mosquitto: Mosquitto
) -> tuple[dict[int, Outcome], str, str]:
    """Run every row once, in parallel; yield the outcomes and the server's digest before and after."""
    base = server_before
    places = _workspace(base, keyring, mosquitto)
    before = tree_hash(Path(places["server"]), skip=LAST_ATTEMPT)
    # Rows pointed at the shared server run one after another (a command that changes a server
    # holds its lock, so two at once would see SERVER_BUSY); the others run in parallel.
    shared = [i for i, one in enumerate(ROWS) if any("{server}" in a for a in one.args)]

    def in_turn() -> dict[int, Outcome]:
        return {i: _run(ROWS[i], i, places, base) for i in shared}

    with ThreadPoolExecutor(max_workers=6) as pool:
        turns = pool.submit(in_turn)
        futures = {
            i: pool.submit(_run, one, i, places, base) for i, one in enumerate(ROWS) if i not in shared
        }
        results = {i: f.result() for i, f in futures.items()} | turns.result()
    return results, before, tree_hash(Path(places["server"]), skip=LAST_ATTEMPT)


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[r.name for r in ROWS])
def test_hostile_input_gives_one_error_line(
    index: int, outcomes: tuple[dict[int, Outcome], str, str]
) -> None:
    """The row's command exits 1 or 2 with one ``error: CODE: message`` line and no traceback."""
    one, got = ROWS[index], outcomes[0][index]
    assert "Traceback" not in got.stderr, got.stderr
    assert "Traceback" not in got.stdout, got.stdout
    errors = [line for line in got.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 or (one.problems and len(errors) > 1), got.stderr
    for line in errors:
        found = ERROR_LINE.match(line)
        assert found is not None, line
        assert found.group(1) == one.code, line
    others = [ln for ln in got.stderr.splitlines() if ln not in errors]
    assert all(ln.startswith("warning: ") or LOG_LINE.match(ln) for ln in others), got.stderr
    assert got.returncode == one.exit, got.stderr


def test_hostile_input_changes_nothing_on_the_server(outcomes: tuple[dict[int, Outcome], str, str]) -> None:
    """No row, refused or failed, changed a byte of the server directory it was pointed at."""
    _, before, after = outcomes
    assert after == before


def test_a_password_typed_on_the_command_line_is_warned_about(
    outcomes: tuple[dict[int, Outcome], str, str],
) -> None:
    """``--password`` on the command line prints a warning naming the safer ways; the variable does not."""
    typed = next(i for i, r in enumerate(ROWS) if "--password=secret" in r.args)
    assert "warning: --password shows in the process list" in outcomes[0][typed].stderr
    others = [o for i, o in outcomes[0].items() if i != typed]
    assert not any("--password shows" in o.stderr for o in others)


def _commands(group: click.Group, path: str) -> Iterator[str]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}"


def test_every_command_has_a_row() -> None:
    """Each command of the three CLIs (found by click introspection) has at least one hostile row."""
    from agent.cli import main as agent_main
    from fleet.cli import main as fleet_main
    from simulator.cli import main as sim_main

    every = [
        *_commands(agent_main, AGENT),
        *_commands(sim_main, SIM),
        *_commands(fleet_main, FLEET),
    ]
    covered = {r.command for r in ROWS}
    assert len(every) >= 39
    assert [c for c in every if c not in covered] == []


def test_a_refusal_is_told_without_json_too(outcomes: tuple[dict[int, Outcome], str, str]) -> None:
    """``plan`` refused without ``--json`` prints its verdict on stdout and the error line on stderr."""
    index = next(i for i, r in enumerate(ROWS) if r.command.endswith(" plan") and "--to=8.3" in r.args)
    got = outcomes[0][index]
    assert "refused" in got.stdout
    assert got.stderr.startswith("error: MAINTENANCE_KEY_REQUIRED:")
