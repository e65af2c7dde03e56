"""The locked-down broker's credentials (simulator/pki.py) and configuration text (simulator/lockdown.py)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulator.lockdown import acl_text, config_text, message_size_limit, write_config
from simulator.pki import Identities, ensure_password, fleet_serials, init_pki, load_identities, passwd_line

SERVERS = ("AWX000000001", "AWX000000002")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A PKI for two servers, two operators and the controller."""
    init_pki(tmp_path / "pki", Identities(SERVERS, ("alice", "bob")))
    return tmp_path / "pki"


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_private_keys_are_0600_in_folders_0700(pki: Path) -> None:
    """Every private key is mode 0600; the PKI folder and its clients folder are 0700."""
    keys = sorted(pki.rglob("*.key"))
    assert len(keys) == 2 + len(SERVERS) + 2 + 1  # CA, broker, servers, operators, controller
    assert {_mode(k) for k in keys} == {0o600}
    assert _mode(pki) == 0o700
    assert _mode(pki / "clients") == 0o700


def test_each_client_certificate_names_its_identity_and_chains_to_the_ca(pki: Path) -> None:
    """A client certificate's common name is the serial (or operator name), CA-signed for client use."""
    ca = _certificate(pki / "ca.crt")
    for name in (*SERVERS, "alice", "bob", "controller"):
        certificate = _certificate(pki / "clients" / f"{name}.crt")
        assert _common_name(certificate) == name
        certificate.verify_directly_issued_by(ca)
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_the_broker_certificate_names_localhost_and_the_loopback_address(pki: Path) -> None:
    """The broker's certificate carries the SANs a client checks: localhost and 127.0.0.1."""
    certificate = _certificate(pki / "broker.crt")
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    certificate.verify_directly_issued_by(_certificate(pki / "ca.crt"))
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)


def test_the_identities_are_recorded_and_read_back(pki: Path) -> None:
    """``identities.json`` gives back the servers, operators and controller the PKI was made for."""
    assert load_identities(pki) == Identities(SERVERS, ("alice", "bob"))


def test_a_folder_that_holds_files_is_refused(tmp_path: Path) -> None:
    """``init`` refuses a folder with files in it and leaves them as they were."""
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "notes.txt").write_text("mine\n")
    with pytest.raises(ValueError, match="not an empty folder"):
        init_pki(tmp_path / "pki", Identities(SERVERS))
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pki"], "no half-built folder is left beside it"


@pytest.mark.parametrize(
    ("servers", "operators", "problem"),
    [
        (("AWX1", "alice"), ("alice",), "given twice"),
        (("AWX1",), ("controller",), "given twice"),
        (("AWX/1",), ("alice",), "must be 1-64 characters"),
        ((), ("alice",), "no servers"),
    ],
)
def test_a_name_in_two_roles_or_not_a_topic_level_is_refused(
    servers: tuple[str, ...], operators: tuple[str, ...], problem: str
) -> None:
    """Names are one namespace of single topic levels, and at least one server is needed."""
    with pytest.raises(ValueError, match=problem):
        Identities(servers, operators)


def test_a_fleet_folder_gives_its_serials(tmp_path: Path) -> None:
    """``--fleet`` reads the serials of a simulated fleet's ``fleet.json``, in its order."""
    servers = [{"serial": s, "site": "hq"} for s in ("AWX9", "AWX3")]
    (tmp_path / "fleet.json").write_text(json.dumps({"digest": "x", "servers": servers}))
    assert fleet_serials(tmp_path) == ("AWX9", "AWX3")
    with pytest.raises(ValueError, match="not a fleet folder"):
        fleet_serials(tmp_path / "elsewhere")


def test_a_password_line_is_what_mosquitto_passwd_writes() -> None:
    """Same password and salt as a line ``mosquitto_passwd -b`` wrote: the same line, byte for byte."""
    written = (
        "alice:$7$101$X9MMXyJTqGJrKLCX$d7odG3+tBkY90t64vhIZdQRPmW5EDs81quae40Ol5JA7rAOkwPGWWLpvVJalbUaxqefThiBkQY"
        "FfI9ZTIXc7PQ=="
    )
    salt = base64.b64decode("X9MMXyJTqGJrKLCX")
    assert passwd_line("alice", "s3cret", salt) == written


def test_a_password_is_made_once_mode_0600(pki: Path) -> None:
    """A password file is created 0600 the first time and read back (not replaced) afterwards."""
    first = ensure_password(pki, "alice")
    assert _mode(pki / "clients" / "alice.password") == 0o600
    assert ensure_password(pki, "alice") == first
    assert len(first) >= 32


def test_the_acl_binds_servers_by_pattern_and_names_each_operator() -> None:
    """Servers get ``%u`` patterns; each operator and the controller a section denying its own name."""
    text = acl_text(Identities(SERVERS, ("alice",)))
    assert "pattern write allworx/+/%u/state" in text.splitlines()
    assert "pattern read allworx/+/%u/cmd/#" in text.splitlines()
    assert not any(serial in text for serial in SERVERS), "no per-server line: the serial comes from %u"
    for name in ("alice", "controller"):
        section = text.split(f"user {name}\n")[1].split("\n\n")[0].splitlines()
        assert section[0] == f"topic deny allworx/+/{name}/#"
    assert "topic write allworx/campaigns/+/control" in text.split("user alice\n")[1].split("\n\n")[0]


def test_the_acl_grants_each_server_its_own_home_assistant_topics() -> None:
    """Servers write their discovery configs and values by ``%u`` under the prefix; operators read it."""
    lines = acl_text(Identities(SERVERS, ("alice",)), "ha").splitlines()
    assert "pattern write ha/+/allworx_%u/+/config" in lines
    assert "pattern write allworx/+/%u/ha" in lines
    alice = lines[lines.index("user alice") :]
    assert "topic deny ha/+/allworx_alice/#" in alice
    assert "topic read ha/#" in alice


def test_a_home_assistant_prefix_of_several_levels_is_refused() -> None:
    """A prefix with ``/`` or a wildcard is a ``ValueError``, not a pattern granting more."""
    for prefix in ("a/b", "#", "ha+", ""):
        with pytest.raises(ValueError, match="Home Assistant prefix"):
            acl_text(Identities(SERVERS), prefix)


def test_the_config_requires_certificates_and_ties_the_client_id_to_the_identity(tmp_path: Path) -> None:
    """The listener requires a client certificate, names users and client ids by it, and refuses anonymity."""
    lines = config_text(tmp_path, 8883, tmp_path / "m.acl", Identities(SERVERS)).splitlines()
    for line in (
        "listener 8883 127.0.0.1",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"acl_file {tmp_path / 'm.acl'}",
        f"message_size_limit {message_size_limit(len(SERVERS))}",
    ):
        assert line in lines


def test_the_message_size_limit_leaves_room_for_a_campaign_of_the_whole_fleet() -> None:
    """The limit is at least 256 KiB and grows by 2 KiB per server, up to MQTT's largest packet."""
    assert message_size_limit(0) == 256 * 1024
    assert message_size_limit(10_000) == 256 * 1024 + 10_000 * 2048
    assert message_size_limit(10**9) == 268_435_455


def test_the_password_variant_writes_a_private_password_file(pki: Path, tmp_path: Path) -> None:
    """``--passwords``: a 0600 password file beside the config, one line per identity, named in the config."""
    written = write_config(pki, 8883, tmp_path / "conf" / "mosquitto.conf", passwords=True)
    passwords = Path(written["passwords"])
    assert _mode(passwords) == 0o600
    users = [line.split(":")[0] for line in passwords.read_text().splitlines()]
    assert users == [*SERVERS, "alice", "bob", "controller"]
    config = Path(written["config"]).read_text().splitlines()
    assert f"password_file {passwords}" in config
    assert "require_certificate true" not in config
