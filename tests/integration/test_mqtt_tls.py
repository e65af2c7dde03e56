"""``allworx-agent run`` over mqtts:// against a Mosquitto with TLS: mutual TLS, and a password.

The certificates are made here (a test CA, a server certificate for 127.0.0.1, a client
certificate); Mosquitto gets two TLS listeners: one that requires a client certificate and
takes its common name as the user, one that takes a user name and password.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.broker import MOSQUITTO_LIMITS, free_port, mosquitto_path, wait_listening
from simulator.server import ServerSpec, create_server
from tests.integration.conftest import require_mosquitto

pytestmark = pytest.mark.integration
USER, PASSWORD = "lab-agent", "s3cret-passw0rd"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    # mode 0600: the agent refuses a client key that group or others may read
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, signer = (subject, key) if issuer is None else issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class TlsBroker:
    """Mosquitto with a mutual-TLS listener and a password listener, and the files a client needs."""

    mutual_port: int
    password_port: int
    ca: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    require_mosquitto()
    work = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("allworx test CA", ca_key, None, ca=True)
    files: dict[str, Path] = {}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"allworx-{who}", key, ("allworx test CA", ca_key), ca=False)
        files[who] = work / f"{who}.pem"
        files[who].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, work / f"{who}.key")
    ca = work / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    passwords = work / "passwords"
    passwords.touch()
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), USER, PASSWORD], check=True, capture_output=True
    )
    mutual, password = free_port(), free_port()
    tls = f"cafile {ca}\ncertfile {files['server']}\nkeyfile {work / 'server.key'}\n"
    config = work / "mosquitto.conf"
    config.write_text(
        ""
        # as root Mosquitto would switch to its own user, who cannot read this test's private folder
        + ("user root\n" if os.geteuid() == 0 else "")
        + "per_listener_settings true\npersistence false\nlog_dest stderr\n"
        + "".join(f"{name} {MOSQUITTO_LIMITS[name]}\n" for name in ("message_size_limit", "max_packet_size"))
        + f"listener {mutual} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n"
        "allow_anonymous false\n"
        f"listener {password} 127.0.0.1\n{tls}password_file {passwords}\nallow_anonymous false\n"
    )
    exe = mosquitto_path()
    assert exe is not None
    process = subprocess.Popen([exe, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_listening(mutual, 10) and wait_listening(password, 10), "mosquitto did not start with TLS"
        yield TlsBroker(mutual, password, ca, files["client"], work / "client.key")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _agent(server_dir: Path, *args: str, password: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, **({"ALLWORX_MQTT_PASSWORD": password} if password else {})}
    code = "import sys; from agent.cli import main; sys.argv[0] = 'allworx-agent'; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "run", "--server-dir", str(server_dir), "--keepalive", "5", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _availability(broker: TlsBroker, topic: str, want: str, seconds: float) -> bool:
    """Whether ``topic`` reads ``want`` within ``seconds`` (watched over mutual TLS)."""
    context = ssl.create_default_context(cafile=str(broker.ca))
    context.load_cert_chain(str(broker.client_cert), str(broker.client_key))
    async with aiomqtt.Client("127.0.0.1", broker.mutual_port, tls_context=context) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    if message.payload == want.encode():
                        return True
        except TimeoutError:
            return False
    return False


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return process.returncode, err


@pytest.mark.parametrize("auth", ["client-certificate", "password"])
async def test_agent_reports_over_tls(tls_broker: TlsBroker, tmp_path: Path, auth: str) -> None:
    """The agent connects over mqtts:// (mutual TLS, or TLS with a password from the environment)."""
    site = f"tls{uuid.uuid4().hex[:8]}"
    server = create_server(
        tmp_path / "hq", ServerSpec(model="6x", release="7.0", users=3, call_log_rows=10, site=site)
    )
    topic = f"allworx/{site}/{server.identity().serial}/availability"
    if auth == "client-certificate":
        args = [f"--broker=mqtts://127.0.0.1:{tls_broker.mutual_port}", "--ca", str(tls_broker.ca),
                "--cert", str(tls_broker.client_cert), "--key", str(tls_broker.client_key)]  # fmt: skip
        agent = _agent(server.root, *args)
    else:
        args = [f"--broker=mqtts://127.0.0.1:{tls_broker.password_port}", "--ca", str(tls_broker.ca),
                "--username", USER]  # fmt: skip
        agent = _agent(server.root, *args, password=PASSWORD)
    try:
        assert await _availability(tls_broker, topic, "online", 20), "the agent never came online over TLS"
    finally:
        code, err = _stop(agent)
    assert code == 0, err
    assert "Traceback" not in err
    assert await _availability(tls_broker, topic, "offline", 5), "a clean stop publishes offline"


async def test_wrong_password_or_untrusted_broker_never_connects(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """A refused password, or a broker certificate the CA does not vouch for: no session, no traceback."""
    site = f"tls{uuid.uuid4().hex[:8]}"
    server = create_server(
        tmp_path / "hq", ServerSpec(model="6x", release="7.0", users=3, call_log_rows=10, site=site)
    )
    topic = f"allworx/{site}/{server.identity().serial}/availability"
    other_ca = tmp_path / "other-ca.pem"
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca.write_bytes(
        _certificate("another CA", other_key, None, ca=True).public_bytes(serialization.Encoding.PEM)
    )
    port = tls_broker.password_port
    wrong = _agent(server.root, f"--broker=mqtts://127.0.0.1:{port}", "--ca", str(tls_broker.ca),
                   "--username", USER, password="not-the-password")  # fmt: skip
    copy = shutil.copytree(server.root, tmp_path / "hq-copy", symlinks=True)  # one daemon a server directory
    untrusted = _agent(copy, f"--broker=mqtts://127.0.0.1:{port}", "--ca", str(other_ca),
                       "--username", USER, password=PASSWORD)  # fmt: skip
    try:
        assert not await _availability(tls_broker, topic, "online", 4)
        assert wrong.poll() is None and untrusted.poll() is None, "the daemon keeps retrying"
    finally:
        results = [_stop(wrong), _stop(untrusted)]
    for code, err in results:
        assert code == 0 and "Traceback" not in err, err
