"""The credentials of a locked-down fleet broker: a CA, the broker's certificate, one certificate per client.

``allworx-sim pki init DIR`` makes, in one go::

    DIR/ca.crt, ca.key               the CA (ECDSA P-256) every certificate below chains to
    DIR/broker.crt, broker.key       the broker's certificate (SAN: localhost, 127.0.0.1)
    DIR/clients/NAME.crt, NAME.key   one per identity: each server (common name = its serial), each
                                     operator, and ``controller`` (the campaign controller)
    DIR/clients/NAME.password        (made later by ``allworx-sim broker config --passwords``)
    DIR/identities.json              which names are servers, operators and the controller

The broker takes a certificate's common name as the client's user name, so the name is what its
ACL grants rights to (simulator/lockdown.py).

Invariants: every private key and password file is created mode 0600 with ``O_EXCL`` (the mode is
given to ``open``, never widened, and nothing is overwritten), in folders created mode 0700; the
folder is built beside ``DIR`` and renamed into place, so ``DIR`` holds all of it or none; a name
is one topic level (``[A-Za-z0-9._-]``) and belongs to one role only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.cliutil import guarded
from agent.mqtt.topics import check_level

CONTROLLER = "controller"  # the campaign controller's identity
DEFAULT_OPERATOR = "operator"
IDENTITIES = "identities.json"
CA_DAYS, LEAF_DAYS = 3650, 825  # a leaf's validity: the common browser ceiling, renewal is re-issue
PASSWORD_ITERATIONS = 101  # mosquitto_passwd's default; the passwords are random 190-bit strings
PRIVATE_FILE, PRIVATE_DIR, PUBLIC_FILE = 0o600, 0o700, 0o644


@dataclass(frozen=True, slots=True)
class Identities:
    """Who may connect: the servers (by serial), the operators, and the campaign controller.

    Raises:
        ValueError: on construction, a name that is not one topic level, or that is given twice.
    """

    servers: tuple[str, ...]
    operators: tuple[str, ...] = (DEFAULT_OPERATOR,)
    controller: str = CONTROLLER

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("no servers: give --servers SERIAL[,SERIAL...] or --fleet FOLDER")
        if not self.operators:
            raise ValueError("no operators: give --operators NAME[,NAME...]")
        seen: set[str] = set()
        for name in self.names:
            check_level(name, "name")
            if name in seen:
                raise ValueError(f"the name {name!r} is given twice: each server, operator and the "
                                 f"controller ({self.controller!r}) needs a name of its own")  # fmt: skip
            seen.add(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every identity's name: servers, operators, the controller."""
        return (*self.servers, *self.operators, self.controller)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``identities.json``)."""
        return {
            "schema": 1,
            "servers": list(self.servers),
            "operators": list(self.operators),
            "controller": self.controller,
        }


def load_identities(pki: Path) -> Identities:
    """Read ``pki/identities.json``.

    Raises:
        ValueError: the folder is not one ``pki init`` made, or the file is malformed.
    """
    path = pki / IDENTITIES
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{pki} is not a PKI folder (no {IDENTITIES}; make one with allworx-sim pki init)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("schema") != 1:
        raise ValueError(f"{path}: not an identities document of schema 1")
    lists = [raw.get("servers"), raw.get("operators")]
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in lists):
        raise ValueError(f"{path}: 'servers' and 'operators' must be lists of names")
    if not isinstance(raw.get("controller"), str):
        raise ValueError(f"{path}: 'controller' must be a name")
    return Identities(tuple(raw["servers"]), tuple(raw["operators"]), raw["controller"])


def fleet_serials(fleet: Path) -> tuple[str, ...]:
    """The serials of a simulated fleet folder (its ``fleet.json``), in the fleet's order.

    Raises:
        ValueError: the folder holds no readable fleet description.
    """
    from simulator.fleet.build import MANIFEST

    path = fleet / MANIFEST
    try:
        servers = json.loads(path.read_text(encoding="utf-8"))["servers"]
        return tuple(str(s["serial"]) for s in servers)
    except FileNotFoundError:
        raise ValueError(
            f"{fleet} is not a fleet folder (no {MANIFEST}; build one with allworx-sim fleet)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read the servers of {path}: {exc}") from None


# ------------------------------------------------------------------------------- files


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` mode 0600 holding ``data``; never replace an existing file.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: it cannot be written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PUBLIC_FILE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def client_files(pki: Path, name: str) -> tuple[Path, Path]:
    """The certificate and key file of identity ``name``."""
    return pki / "clients" / f"{name}.crt", pki / "clients" / f"{name}.key"


def password_file(pki: Path, name: str) -> Path:
    """The file holding identity ``name``'s broker password (one line)."""
    return pki / "clients" / f"{name}.password"


def ensure_password(pki: Path, name: str) -> str:
    """Return ``name``'s broker password, making a random one (mode 0600) the first time.

    Raises:
        OSError: the file cannot be read or written.
    """
    path = password_file(pki, name)
    with contextlib.suppress(FileExistsError):  # made once: a broker already given it keeps working
        write_private(path, (secrets.token_urlsafe(24) + "\n").encode("ascii"))
    return path.read_text(encoding="ascii").splitlines()[0]


def passwd_line(name: str, password: str, salt: bytes | None = None) -> str:
    """One line of a Mosquitto password file (``mosquitto_passwd``'s PBKDF2-SHA512 ``$7$`` form)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PASSWORD_ITERATIONS)
    encoded = [base64.b64encode(part).decode("ascii") for part in (salt, digest)]
    return f"{name}:$7${PASSWORD_ITERATIONS}${encoded[0]}${encoded[1]}"


# ------------------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class _Signer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Allworx fleet"),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])  # fmt: skip


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _certificate(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, signer: _Signer | None, now: dt.datetime
) -> x509.CertificateBuilder:
    issuer = signer or _Signer(subject, key)
    ca = signer is None
    days = CA_DAYS if ca else LEAF_DAYS
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    )


def _issue(folder: Path, stem: str, common: str, signer: _Signer, now: dt.datetime, *, broker: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _certificate(_name(common), key, signer, now)
    if broker:
        names = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if broker else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    certificate = builder.sign(signer.key, hashes.SHA256())
    write_private(folder / f"{stem}.key", _key_pem(key))
    _write_public(folder / f"{stem}.crt", certificate.public_bytes(serialization.Encoding.PEM))


def init_pki(directory: Path, identities: Identities, now: dt.datetime | None = None) -> None:
    """Make the CA, the broker's certificate and every identity's certificate in ``directory``.

    ``directory`` must not exist or be empty; it is built beside itself and renamed into place.

    Raises:
        ValueError: ``directory`` holds files already.
        OSError: it cannot be made.
    """
    directory = directory.absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ValueError(
            f"{directory} exists and is not an empty folder: a PKI is made once, in a new folder"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))  # made mode 0700
    try:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("Allworx fleet broker CA")
        ca = _certificate(ca_name, ca_key, None, now).sign(ca_key, hashes.SHA256())
        write_private(work / "ca.key", _key_pem(ca_key))
        _write_public(work / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
        signer = _Signer(ca_name, ca_key)
        _issue(work, "broker", "localhost", signer, now, broker=True)
        os.mkdir(work / "clients", PRIVATE_DIR)
        for name in identities.names:
            _issue(work / "clients", name, name, signer, now, broker=False)
        _write_public(work / IDENTITIES, (json.dumps(identities.to_dict(), indent=2) + "\n").encode())
        os.replace(work, directory)  # replaces an empty folder, else fails
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------- command


def _names(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


@click.group()
def pki() -> None:
    """Credentials for a locked-down broker: a CA and one certificate per server and operator."""


@pki.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--servers", callback=_names, default=None, help="SERIAL[,SERIAL...]: the servers' identities.")
@click.option("--operators", callback=_names, default=DEFAULT_OPERATOR, show_default=True,
              help="NAME[,NAME...]: the operators' identities.")  # fmt: skip
@click.option("--fleet", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Take the servers' serials from a simulated fleet folder (too).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@guarded
def init(
    directory: Path,
    servers: tuple[str, ...] | None,
    operators: tuple[str, ...],
    fleet: Path | None,
    as_json: bool,
) -> None:
    """Make a CA, the broker's certificate and a client certificate for each server and operator.

    A server's certificate has its serial as common name, which the broker takes as its user name
    (``allworx-sim broker config`` writes the ACL); ``controller`` is the campaign controller's.
    """
    serials = (*(servers or ()), *(fleet_serials(fleet) if fleet else ()))
    identities = Identities(tuple(dict.fromkeys(serials)), operators)
    init_pki(directory, identities)
    document = {"pki": str(directory), **identities.to_dict()}
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(
        f"made a CA, the broker's certificate and {len(identities.names)} client certificates "
        f"({len(identities.servers)} for servers, {len(identities.operators)} for operators, "
        f"1 for the controller) in {directory}"
    )
