"""A fleet description (TOML, or flags for the common case) and its expansion into servers.

TOML form (every key optional; the defaults are the demo's fleet)::

    [fleet]
    seed = 7                    # the same seed makes the same fleet, server by server
    now = 2024-03-01            # the simulated date the fleet is built for (keys are issued around it)
    servers = 200               # total; shared among [fleet.models] by weight
    sites = ["hq", "east", "west", "north"]
    multisite = 0.025           # share of servers in multi-site networks (networks of up to 5, SITE-1)
    failing = 0.02              # share given corrupted images (their upgrade fails and rolls back)
    offline = 0.02              # share whose agent is not started (a powered-off box)
    [fleet.models]              # weights (SIMULATED mix)
    "6x" = 4
    "731" = 1
    [fleet.releases]            # weights; a model only gets releases it can run (Connect: 8.0 and later)
    "7.0" = 2
    "8.2" = 1
    [fleet.keys]                # weights: a valid 1-year anytime key, an expired one, or none at all
    anytime = 8
    expired = 1
    none = 1

The keys live under ``[fleet]``: a file without that table is refused (:class:`FleetFileError`),
as is an unknown key or a value of the wrong type, each problem naming the file and the key
(``fleet.releases."7.0"``). Command-line flags override the file's values and are checked alike.

Invariant: :func:`expand` is deterministic in the description, so a fleet can be rebuilt, reused,
or shared among hosts (``--shard``) with every host agreeing on every server.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tomllib
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from agent.fileio import read_bounded
from common.errors import StoreError
from common.validation import FileModel, InputError, IsoDate, Problem, Strings, validate
from releases.catalog import Catalog, default_catalog
from simulator.server import serial_for

# integer weights (a TOML weight is read as a float): part of the defaults' digest, which names built fleets
DEFAULT_MODELS: dict[str, float] = {
    "6x12": 2, "6x": 4, "24x": 3, "48x": 2, "320": 2, "324": 2, "530": 2, "536": 2, "731": 1,
}  # fmt: skip
DEFAULT_RELEASES: dict[str, float] = {
    "7.0": 2,
    "7.1": 1,
    "7.2": 1,
    "7.3": 1,
    "7.4": 1,
    "7.5": 1,
    "7.6": 2,
    "7.7": 2,
    "8.0": 2,
    "8.1": 2,
    "8.2": 2,
    "8.3": 1,
}
DEFAULT_KEYS: dict[str, float] = {"anytime": 8, "expired": 1, "none": 1}
KEY_KINDS = ("anytime", "expired", "none")
NETWORK_SIZE = 5
MAX_SERVERS = 1_000_000  # as the --servers flag
MAX_FLEET_FILE = 1024 * 1024  # bytes: a fleet description is a few lines


class FleetFileError(InputError):
    """A fleet description (its file or the flags over it) is malformed; each problem names the key."""


def _share(value: int | float) -> int | float:
    if not 0 <= value <= 1:
        raise ValueError(f"must be a share between 0 and 1, got {value:g}")
    return value


def _weights(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if not weights or any(w < 0 for w in weights.values()) or not total > 0:
        raise ValueError("weights must be non-negative and not all zero")
    if math.isinf(total):
        raise ValueError("weights too large: their sum must be a finite number")
    return weights


def _key_kinds(weights: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(KEY_KINDS))
    if unknown:
        raise ValueError(f"unknown key kind {unknown[0]!r} (kinds are {', '.join(KEY_KINDS)})")
    return weights


def _sites(sites: tuple[str, ...]) -> tuple[str, ...]:
    if not sites:
        raise ValueError("a fleet needs at least one site")
    return sites


Share = Annotated[int | float, AfterValidator(_share)]  # an integer stays one (it is part of the digest)
Weights = Annotated[dict[str, float], AfterValidator(_weights)]
KeyWeights = Annotated[Weights, AfterValidator(_key_kinds)]


class FleetSpec(FileModel):
    """What fleet to build (the ``[fleet]`` table; defaults: the demo's fleet).

    Raises:
        pydantic.ValidationError: on construction, when a count, share or weight is out of range.
    """

    servers: int = Field(default=200, ge=1, le=MAX_SERVERS)
    seed: int = 7
    now: IsoDate = date(2024, 3, 1)
    sites: Annotated[Strings, AfterValidator(_sites)] = ("hq", "east", "west", "north")
    models: Weights = Field(default_factory=lambda: dict(DEFAULT_MODELS))
    releases: Weights = Field(default_factory=lambda: dict(DEFAULT_RELEASES))
    keys: KeyWeights = Field(default_factory=lambda: dict(DEFAULT_KEYS))
    multisite: Share = 0.025
    failing: Share = 0.02
    offline: Share = 0.02

    def digest(self) -> str:
        """A fingerprint of the description (reuse checks it)."""
        raw = json.dumps(self.model_dump(), sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


class FleetFile(FileModel):
    """A fleet description file: everything under ``[fleet]``."""

    fleet: FleetSpec


@dataclass(frozen=True, slots=True)
class ServerPlan:
    """One server of the fleet, as the description made it."""

    index: int
    serial: str
    model: str
    release: str
    shipped: date
    site: str
    key: str  # anytime | expired | none
    network: str | None = None
    failing: bool = False
    offline: bool = False

    @property
    def dirname(self) -> str:
        """Its folder under ``servers/``."""
        return f"{self.index:05d}-{self.serial}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``fleet.json``)."""
        out = asdict(self)
        out["shipped"] = self.shipped.isoformat()
        return out


def parse_toml(text: str, file: str, **overrides: Any) -> FleetSpec:
    """Parse a fleet description's text (read from ``file``), flags' values (``overrides``) over it.

    Raises:
        FleetFileError: not TOML, no ``[fleet]`` table, an unknown key or a bad value.
    """
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or a number tomllib cannot convert
        raise FleetFileError([Problem(file, "", None, f"not valid TOML: {exc}")]) from None
    if "fleet" not in raw:
        found = f" (found: {', '.join(sorted(raw))})" if raw else " (the file is empty)"
        problem = f"no [fleet] table: a fleet description's keys go under [fleet]{found}"
        raise FleetFileError([Problem(file, "", None, problem)])
    return _validate(raw, file, overrides)


def load_toml(path: Path, **overrides: Any) -> FleetSpec:
    """Read a fleet description, then apply ``overrides`` (flags given on the command line).

    Raises:
        FleetFileError: unreadable file, or any problem :func:`parse_toml` finds; a bad override.
    """
    try:  # bounded and non-blocking: /dev/zero or a FIFO is refused at once
        text = read_bounded(path, MAX_FLEET_FILE).decode("utf-8")
    except (OSError, StoreError, UnicodeDecodeError) as exc:
        raise FleetFileError([Problem(str(path), "", None, f"cannot be read: {exc}")]) from None
    return parse_toml(text, str(path), **overrides)


def from_flags(**overrides: Any) -> FleetSpec:
    """A description from command-line values alone (``None``: not given, the default).

    Raises:
        FleetFileError: a value out of range, naming its flag.
    """
    return _validate({"fleet": {}}, "", overrides)


def _validate(raw: dict[str, Any], file: str, overrides: dict[str, Any]) -> FleetSpec:
    """Validate a parsed file with the flags' values over its ``[fleet]`` table.

    A flag replaces the file's value before validation (so a flag fixes a bad value in the
    file); a problem with a flag's value names the flag.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    table = raw["fleet"]
    merged = {**raw, "fleet": {**table, **given}} if isinstance(table, dict) else raw
    try:
        return validate(FleetFile, merged, file=file, error=FleetFileError).fleet
    except FleetFileError as exc:
        problems = [_from_flag(p, given) for p in exc.problems]
        raise FleetFileError(problems) from None


def _from_flag(problem: Problem, given: dict[str, Any]) -> Problem:
    name = (problem.field or "").removeprefix("fleet.").split(".")[0]
    if name not in given:
        return problem
    return Problem("command line", "", f"--{name}", problem.message)


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``a=3,b=1`` (a flag) into weights.

    Raises:
        ValueError: not ``name=number`` pairs.
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        out[name.strip()] = float(weight) if weight else 1.0
    if not out:
        raise ValueError(f"{text!r}: expected name=weight pairs")
    return out


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def _release_for(rng: random.Random, spec: FleetSpec, catalog: Catalog, model: str) -> str:
    fits = {
        r: w for r, w in spec.releases.items() if (rel := catalog.get(r)) and rel.supports(model) and w > 0
    }
    if not fits:
        return next(r.version for r in catalog.releases if r.supports(model))
    return _pick(rng, fits)


def expand(spec: FleetSpec, catalog: Catalog | None = None) -> list[ServerPlan]:
    """Every server of the fleet, deterministically.

    Raises:
        ValueError: a model or release in the description is unknown.
    """
    catalog = catalog or default_catalog()
    unknown = [m for m in spec.models if m not in catalog.models] + [
        r for r in spec.releases if not catalog.get(r)
    ]
    if unknown:
        raise ValueError(f"unknown models or releases: {', '.join(unknown)}")
    rng = random.Random(spec.seed)
    plans: list[ServerPlan] = []
    for index in range(spec.servers):
        model = _pick(rng, spec.models)
        release = _release_for(rng, spec, catalog, model)
        start = catalog.release(release).date
        shipped = min(start + timedelta(days=rng.randrange(0, 200)), spec.now)
        plans.append(
            ServerPlan(
                index=index,
                serial=serial_for(f"fleet:{spec.seed}:{index}"),
                model=model,
                release=release,
                shipped=shipped,
                site=spec.sites[index % len(spec.sites)],
                key=_pick(rng, spec.keys),
            )
        )
    return _mark(rng, spec, plans)


def _mark(rng: random.Random, spec: FleetSpec, plans: list[ServerPlan]) -> list[ServerPlan]:
    """Choose the multi-site networks, the failing servers and the offline ones."""
    from dataclasses import replace

    order = list(range(len(plans)))
    rng.shuffle(order)
    size = round(len(plans) * spec.multisite)
    networked = order[: size if size >= 2 else 0]  # a network has at least two members
    rest = order[len(networked) :]
    failing = set(rest[: round(len(plans) * spec.failing)])
    offline = set(rest[len(failing) : len(failing) + round(len(plans) * spec.offline)])
    network = {i: f"net-{n // NETWORK_SIZE + 1}" for n, i in enumerate(sorted(networked))}
    out: list[ServerPlan] = []
    for plan in plans:
        site = spec.sites[len(out) % len(spec.sites)]
        if plan.index in network:  # members of one network sit at different sites
            site = spec.sites[sorted(networked).index(plan.index) % len(spec.sites)]
        out.append(
            replace(
                plan,
                site=site,
                network=network.get(plan.index),
                failing=plan.index in failing,
                offline=plan.index in offline,
            )
        )
    return out


def networks(plans: list[ServerPlan]) -> dict[str, tuple[str, ...]]:
    """Network name -> member serials (SITE-1)."""
    out: dict[str, list[str]] = {}
    for plan in plans:
        if plan.network:
            out.setdefault(plan.network, []).append(plan.serial)
    return {k: tuple(v) for k, v in sorted(out.items())}
