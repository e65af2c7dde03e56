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

Invariant: :func:`expand` is deterministic in the description, so a fleet can be rebuilt, reused,
or shared among hosts (``--shard``) with every host agreeing on every server.
"""

from __future__ import annotations

import hashlib
import json
import random
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from releases.catalog import Catalog, default_catalog
from simulator.server import serial_for

DEFAULT_MODELS = {"6x12": 2, "6x": 4, "24x": 3, "48x": 2, "320": 2, "324": 2, "530": 2, "536": 2, "731": 1}
DEFAULT_RELEASES = {
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
DEFAULT_KEYS = {"anytime": 8, "expired": 1, "none": 1}
KEY_KINDS = ("anytime", "expired", "none")
NETWORK_SIZE = 5


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What fleet to build.

    Raises:
        ValueError: on construction, when a count, share or weight is out of range.
    """

    servers: int = 200
    seed: int = 7
    now: date = date(2024, 3, 1)
    sites: tuple[str, ...] = ("hq", "east", "west", "north")
    models: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    releases: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RELEASES))
    keys: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    multisite: float = 0.025
    failing: float = 0.02
    offline: float = 0.02

    def __post_init__(self) -> None:
        if self.servers < 1 or not self.sites:
            raise ValueError("a fleet needs at least one server and one site")
        for share in (self.multisite, self.failing, self.offline):
            if not 0 <= share <= 1:
                raise ValueError("multisite, failing and offline are shares between 0 and 1")
        for name, weights in (("models", self.models), ("releases", self.releases), ("keys", self.keys)):
            if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"{name}: weights must be non-negative and not all zero")
        if set(self.keys) - set(KEY_KINDS):
            raise ValueError(f"keys: kinds are {', '.join(KEY_KINDS)}")

    def digest(self) -> str:
        """A fingerprint of the description (reuse checks it)."""
        raw = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


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


def load_toml(path: Path, **overrides: Any) -> FleetSpec:
    """Read a fleet description, then apply ``overrides`` (flags given on the command line).

    Raises:
        ValueError: unreadable file or a bad value.
    """
    try:
        raw = tomllib.loads(path.read_text()).get("fleet", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    values: dict[str, Any] = {}
    for key in ("servers", "seed", "multisite", "failing", "offline"):
        if key in raw:
            values[key] = raw[key]
    if "now" in raw:
        values["now"] = raw["now"] if isinstance(raw["now"], date) else date.fromisoformat(str(raw["now"]))
    if "sites" in raw:
        values["sites"] = tuple(str(s) for s in raw["sites"])
    for key in ("models", "releases", "keys"):
        if key in raw:
            values[key] = {str(k): float(v) for k, v in dict(raw[key]).items()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FleetSpec(**values)


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
