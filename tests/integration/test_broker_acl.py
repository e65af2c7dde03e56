"""A locked-down Mosquitto (``allworx-sim pki init`` + ``allworx-sim broker config``): who may say what.

One PKI for the module: servers ``A`` (a real virtual server, whose agent runs in some tests) and
``B`` (an identity only), operators ``operator``, ``auditor`` and ``viewer``, and the controller.
Two Mosquitto processes run the generated configurations: client certificates, and user names
with passwords. Mosquitto refuses a publish the ACL does not allow in silence (MQTT 3.1.1) or with
a PUBACK reason code (MQTT 5), so every test asserts on what a subscriber receives, ending each
attempt with a message that is allowed (the marker): when it arrives, anything sent before it on
the same connection would have arrived first. The client id is the identity's name on this broker,
so each test gives every concurrent connection an identity of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.mqtt.connection import BrokerSettings, Inbound, Protocol, connect
from agent.mqtt.discovery import Discovery
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from common.errors import BrokerError
from simulator.broker import free_port, mosquitto_path, wait_listening
from simulator.server import ServerSpec, create_server
from tests.integration.conftest import require_mosquitto

pytestmark = pytest.mark.integration
B = "AWXB00000002"
OPERATORS = ("operator", "auditor", "viewer")
QUIET = 1.0  # seconds a subscriber waits after the marker for anything that came late


@dataclass(frozen=True)
class Locked:
    """The PKI, the two brokers' ports and server A's directory."""

    pki: Path
    port: int
    password_port: int
    server: ServerDir

    @property
    def a(self) -> str:
        """Server A's serial (the identity whose agent runs)."""
        return self.server.identity().serial

    def settings(self, name: str, *, password: bool = False) -> BrokerSettings:
        """Connection settings of identity ``name`` (its certificate, or its user name and password)."""
        ca = str(self.pki / "ca.crt")
        if password:
            secret = (self.pki / "clients" / f"{name}.password").read_text().splitlines()[0]
            url = f"mqtts://127.0.0.1:{self.password_port}"
            return BrokerSettings(url=url, ca=ca, username=name, password=secret, keepalive=5)
        cert, key = (str(self.pki / "clients" / f"{name}.{ext}") for ext in ("crt", "key"))
        return BrokerSettings(url=f"mqtts://127.0.0.1:{self.port}", ca=ca, cert=cert, key=key, keepalive=5)

    def cli(self, name: str, *, password: bool = False) -> list[str]:
        """The ``--broker`` options of ``allworx-agent run`` and ``allworx-fleet`` for identity ``name``."""
        ca = ["--ca", str(self.pki / "ca.crt")]
        if password:
            secret = self.pki / "clients" / f"{name}.password"
            return [f"--broker=mqtts://127.0.0.1:{self.password_port}", *ca,
                    "--username", name, "--password-file", str(secret)]  # fmt: skip
        clients = self.pki / "clients"
        return [f"--broker=mqtts://127.0.0.1:{self.port}", *ca,
                "--cert", str(clients / f"{name}.crt"), "--key", str(clients / f"{name}.key")]  # fmt: skip


def _sim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from simulator.cli import main; sys.argv[0] = 'allworx-sim'; main()"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@contextlib.contextmanager
def mosquitto_with(config: Path, port: int) -> Iterator[None]:
    """Run Mosquitto with the configuration file ``config`` (listening on ``port``) for the block.

    As root, a ``user root`` line is added (in a copy beside it): Mosquitto would otherwise switch
    to its own user, who cannot read the test's private folders.
    """
    executable = mosquitto_path()
    assert executable is not None
    run = config
    if os.geteuid() == 0:
        run = config.with_name("run-as-root.conf")
        run.write_text(config.read_text() + "user root\n")
    with config.with_name("mosquitto.log").open("ab") as log:
        process = subprocess.Popen([executable, "-c", str(run)], stdout=log, stderr=log)
    try:
        if not wait_listening(port, 10):
            pytest.fail(f"mosquitto did not start with {config}; see its log beside it")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    """The PKI, both generated configurations, and their two Mosquitto processes."""
    require_mosquitto()
    work = tmp_path_factory.mktemp("locked")
    server = create_server(work / "a", ServerSpec(model="6x", release="7.0", users=3, call_log_rows=10))
    serials = f"{server.identity().serial},{B}"
    _sim("pki", "init", "pki", "--servers", serials, "--operators", ",".join(OPERATORS), cwd=work)
    port, password_port = free_port(), free_port()
    _sim("broker", "config", "--pki", "pki", "--port", str(port), "--out", "tls/mosquitto.conf", cwd=work)
    _sim("broker", "config", "--pki", "pki", "--port", str(password_port), "--out", "pw/mosquitto.conf",
         "--passwords", cwd=work)  # fmt: skip
    with (
        mosquitto_with(work / "tls" / "mosquitto.conf", port),
        mosquitto_with(work / "pw" / "mosquitto.conf", password_port),
    ):
        yield Locked(work / "pki", port, password_port, server)


@pytest.fixture
def site() -> str:
    """A site no other test uses (rights are bound to serials: every test may pick its own site)."""
    return f"acl{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def watching(
    settings: BrokerSettings, *filters: str, protocol: Protocol = Protocol.V5
) -> AsyncIterator[asyncio.Queue[Inbound]]:
    """Subscribe to ``filters`` and collect every message received while the block runs."""
    queue: asyncio.Queue[Inbound] = asyncio.Queue()
    async with connect(settings, protocol=protocol, identifier=f"watch-{uuid.uuid4().hex[:8]}") as link:
        for topic in filters:
            await link.subscribe(topic, qos=1)

        async def pump() -> None:
            async for message in link.messages():
                queue.put_nowait(message)

        task = asyncio.create_task(pump())
        await asyncio.sleep(0.2)  # the subscriptions are in place (and retained messages arrived)
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await task


async def until_marker(queue: asyncio.Queue[Inbound], marker: str) -> list[str]:
    """The topics received up to and including the first message on ``marker``, then ``QUIET`` s more."""
    seen: list[str] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1] != marker:
            seen.append((await queue.get()).topic)
    await asyncio.sleep(QUIET)
    while not queue.empty():
        seen.append(queue.get_nowait().topic)
    return seen


async def publish_as(
    settings: BrokerSettings, messages: list[tuple[str, bytes]], *, retain: bool = False
) -> None:
    """Publish ``messages`` in order on one connection, once over MQTT 3.1.1 and once over MQTT 5."""
    for protocol in (Protocol.V311, Protocol.V5):
        async with connect(settings, protocol=protocol, identifier=f"pub-{uuid.uuid4().hex[:8]}") as link:
            for topic, payload in messages:
                await link.publish(topic, payload, qos=1, retain=retain)


async def can_connect(settings: BrokerSettings) -> bool:
    """Whether the broker accepts a session with ``settings`` (MQTT 3.1.1)."""
    try:
        async with asyncio.timeout(10), connect(settings, protocol=Protocol.V311, identifier="probe"):
            return True
    except BrokerError:
        return False


def _program(entry: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {entry} import main; main()"]


def start_agent(locked: Locked, site: str, *extra: str, password: bool = False) -> subprocess.Popen[str]:
    """``allworx-agent run`` for server A at ``site`` with A's credentials (and ``extra`` options)."""
    return subprocess.Popen(
        [*_program("agent.cli"), "run", "--server-dir", str(locked.server.root), "--site", site,
         "--keepalive", "5", *locked.cli(locked.a, password=password), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(process: subprocess.Popen[str]) -> str:
    """Stop a daemon (SIGTERM) and return its stderr."""
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


async def fleet(*args: str) -> tuple[int, Any, str]:
    """``allworx-fleet ARGS --json``: exit code, JSON document, stderr."""
    done = await asyncio.to_thread(
        subprocess.run, [*_program("fleet.cli"), *args, "--json"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


async def online(locked: Locked, site: str, watcher: str = "viewer", *, password: bool = False) -> bytes:
    """Wait for server A's agent to be online at ``site``; return its retained state."""
    base = f"allworx/{site}/{locked.a}"
    async with watching(locked.settings(watcher, password=password), f"{base}/#") as queue:
        got: dict[str, bytes] = {}
        async with asyncio.timeout(30):
            while got.get(f"{base}/availability") != b"online" or f"{base}/state" not in got:
                message = await queue.get()
                got[message.topic] = message.payload
    return got[f"{base}/state"]


# ------------------------------------------------------------------------------- who may connect


async def test_a_client_without_a_certificate_is_refused(locked: Locked) -> None:
    """The certificate listener refuses a client that shows no certificate (an anonymous client)."""
    anonymous = BrokerSettings(url=f"mqtts://127.0.0.1:{locked.port}", ca=str(locked.pki / "ca.crt"))
    assert await can_connect(locked.settings("viewer")), "the control: a certificate of the CA is let in"
    assert not await can_connect(anonymous)


async def test_a_certificate_of_another_ca_is_refused(locked: Locked, tmp_path: Path) -> None:
    """A client certificate naming a real serial but signed by another CA is refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, locked.a)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "forged.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "forged.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    forged = BrokerSettings(url=f"mqtts://127.0.0.1:{locked.port}", ca=str(locked.pki / "ca.crt"),
                            cert=str(tmp_path / "forged.crt"), key=str(tmp_path / "forged.key"))  # fmt: skip
    assert not await can_connect(forged)


async def test_the_password_listener_refuses_anonymous_and_wrong_passwords(locked: Locked) -> None:
    """The password listener lets a listed user in, and refuses no user name or a wrong password."""
    url, ca = f"mqtts://127.0.0.1:{locked.password_port}", str(locked.pki / "ca.crt")
    assert await can_connect(locked.settings("viewer", password=True))
    assert not await can_connect(BrokerSettings(url=url, ca=ca))
    assert not await can_connect(BrokerSettings(url=url, ca=ca, username="viewer", password="guess"))


# ------------------------------------------------------------------------------- who may say what


async def test_a_server_cannot_publish_another_servers_topics(locked: Locked, site: str) -> None:
    """A's credentials publishing B's state, availability, events and replies: an operator sees none of it."""
    theirs = f"allworx/{site}/{B}"
    marker = f"allworx/{site}/{locked.a}/events"
    attempts = [(f"{theirs}/{kind}", b"{}") for kind in ("state", "availability", "events")]
    attempts += [(f"{theirs}/cmd/upgrade/accepted", b"{}"), (f"{theirs}/cmd/upgrade/rejected", b"{}")]
    async with watching(locked.settings("auditor"), f"allworx/{site}/#") as queue:
        await publish_as(locked.settings(locked.a), [*attempts, (marker, b"{}")])
        seen = await until_marker(queue, marker)
    assert [t for t in seen if t != marker] == []


async def test_a_server_publishes_its_own_topics_under_any_site(locked: Locked, site: str) -> None:
    """A's own state, availability, events and replies reach an operator (rights bind the serial only)."""
    mine = f"allworx/{site}/{locked.a}"
    own = [
        f"{mine}/{kind}" for kind in ("state", "availability", "cmd/report/accepted", "cmd/report/rejected")
    ]
    marker = f"{mine}/events"
    async with watching(locked.settings("auditor"), f"allworx/{site}/#") as queue:
        await publish_as(locked.settings(locked.a), [(t, b"{}") for t in own] + [(marker, b"{}")])
        seen = await until_marker(queue, marker)
    assert sorted(set(seen)) == sorted([*own, marker])


async def test_a_server_publishes_its_own_home_assistant_discovery_only(locked: Locked, site: str) -> None:
    """A's discovery configs and values reach an operator; A publishing B's (as B's agent would) does not."""
    mine, theirs = (Discovery(ServerTopics(site, serial)) for serial in (locked.a, B))
    own = [topic for topic, _ in mine.configs("6x")] + [mine.values_topic]
    attempts = [topic for topic, _ in theirs.configs("6x")] + [theirs.values_topic]
    marker = f"allworx/{site}/{locked.a}/events"
    async with watching(locked.settings("auditor"), "homeassistant/#", f"allworx/{site}/#") as queue:
        await publish_as(locked.settings(locked.a), [(t, b"{}") for t in [*attempts, *own, marker]])
        seen = await until_marker(queue, marker)
    assert sorted(set(seen)) == sorted([*own, marker])


async def test_the_agent_announces_itself_to_home_assistant_on_the_locked_broker(
    locked: Locked, site: str
) -> None:
    """``allworx-agent run --ha-discovery`` as A: its three discovery configs and its values are retained."""
    mine = Discovery(ServerTopics(site, locked.a))
    wanted = {topic for topic, _ in mine.configs("6x")} | {mine.values_topic}
    agent = start_agent(locked, site, "--ha-discovery", password=True)
    try:
        await online(locked, site, password=True)
        async with watching(
            locked.settings("auditor", password=True), "homeassistant/#", mine.values_topic
        ) as queue:
            got: set[str] = set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    while not wanted <= got:
                        got.add((await queue.get()).topic)
    finally:
        stop(agent)
    assert sorted(wanted - got) == []


async def test_a_server_cannot_read_another_servers_commands(locked: Locked, site: str) -> None:
    """A subscribed to everything receives a command sent to itself but not the one sent to B before it."""
    mine = f"allworx/{site}/{locked.a}/cmd/report"
    async with watching(locked.settings(locked.a), "#", f"allworx/+/{B}/cmd/#") as queue:
        await publish_as(
            locked.settings("operator"), [(f"allworx/{site}/{B}/cmd/report", b"{}"), (mine, b"{}")]
        )
        seen = await until_marker(queue, mine)
    assert [t for t in seen if t != mine] == []


async def test_a_server_cannot_send_a_command(locked: Locked, site: str) -> None:
    """A's credentials publishing commands (to B, to itself): an operator sees none of them."""
    marker = f"allworx/{site}/{locked.a}/state"
    attempts = [(f"allworx/{site}/{who}/cmd/upgrade", b"{}") for who in (B, locked.a)]
    attempts.append(("allworx/campaigns/c1/control", b"{}"))
    async with watching(locked.settings("auditor"), f"allworx/{site}/#", "allworx/campaigns/#") as queue:
        await publish_as(locked.settings(locked.a), [*attempts, (marker, b"{}")])
        seen = await until_marker(queue, marker)
    assert [t for t in seen if t != marker] == []


async def test_an_operator_sends_commands_and_reads_every_state(locked: Locked, site: str) -> None:
    """Each server's retained state reaches an operator; an operator's command reaches its server."""
    states = [(f"allworx/{site}/{who}/state", who.encode()) for who in (locked.a, B)]
    for serial, (topic, payload) in zip((locked.a, B), states, strict=True):
        await publish_as(locked.settings(serial), [(topic, payload)], retain=True)
    async with watching(locked.settings("auditor"), f"allworx/{site}/+/state") as queue:
        got = {(m.topic, m.payload) for m in [await asyncio.wait_for(queue.get(), 10) for _ in states]}
    assert got == set(states)
    command = f"allworx/{site}/{locked.a}/cmd/report"
    async with watching(locked.settings(locked.a), f"allworx/{site}/{locked.a}/cmd/+") as queue:
        await publish_as(locked.settings("operator"), [(command, b"{}")])
        seen = await until_marker(queue, command)
    assert command in seen


async def test_the_controller_publishes_campaign_states_and_an_operator_controls(locked: Locked) -> None:
    """The controller's campaign status and an operator's control request reach readers; not vice versa."""
    campaign = f"allworx/campaigns/c{uuid.uuid4().hex[:8]}"
    async with watching(locked.settings("auditor"), f"{campaign}/#") as queue:
        await publish_as(locked.settings("operator"), [(f"{campaign}/status", b"{}")])
        await publish_as(locked.settings("controller"), [(f"{campaign}/control", b"{}")])
        await publish_as(locked.settings("controller"), [(f"{campaign}/status", b"{}")])
        await publish_as(locked.settings("operator"), [(f"{campaign}/control", b"{}")])
        seen = await until_marker(queue, f"{campaign}/control")
    assert seen == [f"{campaign}/status"] * 2 + [f"{campaign}/control"] * 2


async def test_an_operator_cannot_publish_as_a_server_of_its_own_name(locked: Locked, site: str) -> None:
    """The servers' ``%u`` patterns let no operator publish a state or discovery config under its name."""
    marker = f"allworx/{site}/{B}/cmd/report"
    own_name = [f"allworx/{site}/operator/state", "homeassistant/update/allworx_operator/software/config"]
    async with watching(locked.settings("auditor"), f"allworx/{site}/#", "homeassistant/#") as queue:
        await publish_as(locked.settings("operator"), [(t, b"{}") for t in [*own_name, marker]])
        seen = await until_marker(queue, marker)
    assert [t for t in seen if t != marker] == []


# ------------------------------------------------------------------------------- the real agent


async def test_the_agent_answers_a_signed_command_over_mutual_tls(locked: Locked, site: str) -> None:
    """``allworx-agent run --ca --cert --key`` answers ``allworx-fleet send report`` sent as an operator."""
    agent = start_agent(locked, site)
    try:
        await online(locked, site)
        code, reply, err = await fleet("send", "report", "--site", site, "--serial", locked.a,
                                       *locked.cli("operator"))  # fmt: skip
    finally:
        agent_err = stop(agent)
    assert code == 0, err
    assert reply["status"] == "accepted"
    assert reply["serial"] == locked.a
    assert "Traceback" not in agent_err


async def test_a_spoofed_state_does_not_fool_fleet_status(locked: Locked, site: str) -> None:
    """B forging A's retained state (8.3, offline): ``allworx-fleet status`` still says 7.0."""
    agent = start_agent(locked, site)
    try:
        genuine = json.loads(await online(locked, site))
        forged = json.dumps({**genuine, "release": "8.3"}).encode()
        base = f"allworx/{site}/{locked.a}"
        offline = b"offline"
        await publish_as(locked.settings(B), [(f"{base}/state", forged), (f"{base}/availability", offline)],
                         retain=True)  # fmt: skip
        code, states, err = await fleet("status", "--site", site, *locked.cli("auditor"))
    finally:
        stop(agent)
    assert code == 0, err
    rows = states if isinstance(states, list) else states["servers"]
    assert [(s["serial"], s["release"]) for s in rows] == [(locked.a, "7.0")]


async def test_no_identity_can_take_over_the_agents_session(locked: Locked, site: str) -> None:
    """B connecting with the agent's client id ``allworx-agent-{site}-{serial}`` leaves A's session alone."""
    agent = start_agent(locked, site)
    availability = f"allworx/{site}/{locked.a}/availability"
    try:
        await online(locked, site)
        async with watching(locked.settings("auditor"), availability) as queue:
            await asyncio.wait_for(queue.get(), 10)  # the retained "online"
            intruder = f"allworx-agent-{site}-{locked.a}"
            async with connect(locked.settings(B), protocol=Protocol.V311, identifier=intruder):
                await asyncio.sleep(3)
            await asyncio.sleep(QUIET)
            after = [queue.get_nowait().payload for _ in range(queue.qsize())]
    finally:
        stop(agent)
    assert after == [], "the agent was knocked off (its will said offline, or it came back online)"


async def test_the_password_variant_serves_a_server_and_an_operator(locked: Locked, site: str) -> None:
    """With user names and passwords: the agent connects as A, an operator's ``send report`` is answered."""
    agent = start_agent(locked, site, password=True)
    try:
        await online(locked, site, password=True)
        code, reply, err = await fleet("send", "report", "--site", site, "--serial", locked.a,
                                       *locked.cli("operator", password=True))  # fmt: skip
    finally:
        stop(agent)
    assert code == 0, err
    assert reply["status"] == "accepted"


async def test_the_password_variant_binds_a_server_to_its_serial(locked: Locked, site: str) -> None:
    """With user names and passwords, B's login publishing A's state: an operator sees only B's own marker."""
    marker = f"allworx/{site}/{B}/events"
    async with watching(locked.settings("auditor", password=True), f"allworx/{site}/#") as queue:
        await publish_as(locked.settings(B, password=True),
                         [(f"allworx/{site}/{locked.a}/state", b"{}"), (marker, b"{}")])  # fmt: skip
        seen = await until_marker(queue, marker)
    assert [t for t in seen if t != marker] == []


async def test_every_fleet_command_connects_with_tls_and_a_password(locked: Locked, site: str) -> None:
    """status, send, campaign start --dry-run and watch all reach a broker that requires TLS and a
    password, with the one set of broker options every command takes."""
    agent = start_agent(locked, site, password=True)
    options = locked.cli("operator", password=True)
    try:
        await online(locked, site, password=True)
        code, states, err = await fleet("status", "--select", f"site={site}", *options)
        assert code == 0, err
        assert [doc["serial"] for doc in states["servers"]] == [locked.a]
        code, reply, err = await fleet("send", "report", "--site", site, "--serial", locked.a, *options)
        assert code == 0, err
        assert reply["status"] == "accepted"
        code, planned, err = await fleet(
            "campaign", "start", "--id", f"c{site}", "--select", f"site={site}", "--dry-run", *options
        )
        assert code == 0, err
        assert [row["serial"] for row in planned["dry_run"]] == [locked.a]
        watched = await asyncio.to_thread(
            subprocess.run,
            [*_program("fleet.cli"), "watch", "--duration=2", "--plain", f"--select=site={site}", *options],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        stop(agent)
    assert watched.returncode == 0, watched.stderr
    assert "servers 1" in watched.stdout + watched.stderr


# ------------------------------------------------------------------------------- secrets on disk


@pytest.mark.parametrize("secret", ["key", "password-file"])
def test_the_agent_refuses_a_secret_others_can_read(locked: Locked, tmp_path: Path, secret: str) -> None:
    """A client key or password file readable by group or others: one ``error: BAD_INPUT`` line, exit 1."""
    source = locked.pki / "clients" / (f"{locked.a}.key" if secret == "key" else f"{locked.a}.password")
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    copy.chmod(0o640)
    if secret == "key":
        options = [*locked.cli(locked.a)[:-2], "--key", str(copy)]
    else:
        options = [*locked.cli(locked.a, password=True)[:-2], "--password-file", str(copy)]
    done = subprocess.run(
        [*_program("agent.cli"), "run", "--server-dir", str(locked.server.root), *options],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: BAD_INPUT: the {'client key' if secret == 'key' else 'password file'} {copy} is open to "
        f"group or others (mode 0640); chmod 600 {copy}"
    ]
