"""Virtual server hardware: make a server directory the agent can run on.

A new virtual server holds its identity (serial, model, MAC, ship date, site), two release slots
(slot ``a`` holding release R's image and a real SQLite database of realistic PBX data in R's
schema; slot ``b`` empty), the bootloader's environment, the pinned vendor root, its ship key
(rule SWM-4) and the phone firmware store.

Invariant: creation is all or nothing (built in a temporary sibling folder, then renamed), and
never overwrites an existing server.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from agent.bootloader import BootEnv
from agent.fileio import write_json
from agent.mqtt.topics import check_level
from agent.opkeys import trust_operator
from agent.releasetrust import pin_root
from agent.store import ServerDir, SlotInfo
from common.errors import StoreError
from common.reasons import Reason
from fleet.operator import default_operator
from releases.catalog import Catalog, default_catalog
from simulator.issuer import ship_key
from simulator.keyring import VendorKeyring
from simulator.pbxdata import populate
from simulator.publish import default_repository, image_path, metadata_path

ALLWORX_OUI = "00:0A:DD"  # the vendor's MAC prefix, as on real Allworx hardware
MAX_CALL_LOG_ROWS = 5_000_000  # about 300 MB of database; more is a typo, not a test


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What to build."""

    model: str
    release: str
    serial: str | None = None
    shipped: date | None = None
    users: int | None = None
    site: str = "default"
    call_log_rows: int | None = None
    repository: str | None = None  # where it downloads releases (default: the keyring's repository)


def serial_for(seed: str) -> str:
    """A deterministic, Allworx-looking serial number for ``seed``."""
    return "AWX" + hashlib.sha256(seed.encode()).hexdigest()[:9].upper()


def mac_for(serial: str) -> str:
    """A deterministic MAC address in the vendor's range for ``serial``."""
    tail = hashlib.sha256(b"mac" + serial.encode()).digest()[:3]
    return ALLWORX_OUI + ":" + ":".join(f"{b:02X}" for b in tail)


def _validate(spec: ServerSpec, catalog: Catalog) -> None:
    if spec.model not in catalog.models:
        raise StoreError(f"unknown model {spec.model!r}; known: {', '.join(catalog.models)}")
    release = catalog.get(spec.release)
    if release is None:
        raise StoreError(f"unknown release {spec.release!r}", reason=Reason.UNKNOWN_RELEASE)
    if not release.supports(spec.model):  # rule REL-1
        raise StoreError(
            f"an Allworx {spec.model} cannot run release {release.version}", reason=Reason.MODEL_UNSUPPORTED
        )
    max_users = catalog.model(spec.model).max_users
    if spec.users is not None and not 0 <= spec.users <= max_users:
        raise StoreError(f"users must be between 0 and {max_users} for a {spec.model}")
    if spec.call_log_rows is not None and not 0 <= spec.call_log_rows <= MAX_CALL_LOG_ROWS:
        raise StoreError(f"call-log rows must be between 0 and {MAX_CALL_LOG_ROWS:,}")
    try:  # the agent's daemon puts both in MQTT topics: one topic level each
        if spec.serial is not None:
            check_level(spec.serial, "serial")
        check_level(spec.site, "site")
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def create_server(
    root: Path,
    spec: ServerSpec,
    *,
    keyring: VendorKeyring | None = None,
    catalog: Catalog | None = None,
    seed: int | None = None,
) -> ServerDir:
    """Build a virtual server at ``root``.

    Raises:
        StoreError: bad specification, or ``root`` already holds something.
    """
    catalog = catalog or default_catalog()
    _validate(spec, catalog)
    if root.exists() and any(root.iterdir()):
        raise StoreError(f"{root} already exists and is not empty; refusing to overwrite it")
    keyring = keyring or VendorKeyring.load_or_create()
    repo = default_repository(keyring)
    release = catalog.release(spec.release)
    serial = spec.serial or serial_for(str(root.resolve()))
    shipped = spec.shipped or release.date
    users = spec.users if spec.users is not None else min(40, catalog.model(spec.model).max_users)
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _build(
            work=work,
            spec=spec,
            serial=serial,
            shipped=shipped,
            users=users,
            repo=repo,
            keyring=keyring,
            build=release.build,
            schema=release.db_schema,
            firmware=release.phone_firmware,
            seed=seed,
        )
        if root.exists():
            root.rmdir()
        work.rename(root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ServerDir(root)


def _build(
    *,
    work: Path,
    spec: ServerSpec,
    serial: str,
    shipped: date,
    users: int,
    repo: Path,
    keyring: VendorKeyring,
    build: str,
    schema: int,
    firmware: str,
    seed: int | None,
) -> None:
    for sub in ("keys", "trust", "slots/a", "slots/b", "update", "phones"):
        (work / sub).mkdir(parents=True)
    write_json(
        work / "identity.json",
        {
            "serial": serial,
            "model": spec.model,
            "mac": mac_for(serial),
            "shipped": shipped.isoformat(),
            "site": spec.site,
            "repo": spec.repository or str(repo),
        },
    )
    (work / "trust" / "vendor-root.pub").write_text(keyring.root_public_hex + "\n")
    # the release repository's root; one published elsewhere with the same keyring has the same root
    pin_root(work / "trust", metadata_path(repo, "root").read_bytes())
    server = ServerDir(work)
    shutil.copyfile(image_path(repo, build), server.slot_dir("a") / "image.img")
    server.write_slot_info("a", SlotInfo(spec.release, build, schema))
    populate(
        server.db_path("a"),
        schema,
        users=users,
        seed=seed if seed is not None else int(serial[3:], 16),
        call_log_rows=spec.call_log_rows,
        model=spec.model,
    )
    write_json(work / "boot.json", BootEnv().__dict__)
    key = ship_key(keyring, serial, shipped)  # rule SWM-4 (None before the programme began)
    if key is not None:
        checks = server.install_key(key, shipped)
        if not checks.valid:
            raise StoreError(f"the ship key did not verify: {checks.message}")
    server.offer_phone_firmware(firmware, spec.release)
    trust_operator(work, default_operator().public)  # the simulation's operator may command it
