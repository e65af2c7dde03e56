"""The release catalogue and the model table, loaded from data and validated.

Invariants: releases form one ordered chain (catalogue order is upgrade order, dates strictly
increase); every model a release names exists in the model table; at most one release rebuilds
the database (7.1, rule DB-1). A broken file raises :class:`~common.errors.CatalogError` naming
the file, the entry and the problem.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from common.errors import CatalogError

DATA_DIR = Path(__file__).resolve().parent / "data"
CATALOG_FILE = DATA_DIR / "catalog.toml"
MODELS_FILE = DATA_DIR / "models.toml"
REBUILD_RELEASE = "7.1"  # rule DB-1, SEQ-2, SWM-1: the release the whole policy pivots on


@dataclass(frozen=True, slots=True)
class Model:
    """One server model."""

    name: str
    family: str  # "legacy" or "connect"
    capacity: int  # rank in the capacity order (docs/rules.md, "Models")
    max_users: int  # simulated
    list_price: int  # simulated, whole dollars


@dataclass(frozen=True, slots=True)
class Release:
    """One system software release of the chain."""

    version: str
    build: str
    date: date
    db_schema: int
    rebuilds_database: bool
    models: frozenset[str]
    phone_firmware: str
    features: tuple[str, ...]
    index: int

    def supports(self, model: str) -> bool:
        """Return whether ``model`` can run this release (rule REL-1)."""
        return model in self.models


@dataclass(frozen=True, slots=True)
class Patch:
    """A time-critical patch build of a release (rule SWM-7)."""

    build: str
    release: str
    date: date


@dataclass(frozen=True)
class Catalog:
    """The ordered release chain plus the model table."""

    releases: tuple[Release, ...]
    models: Mapping[str, Model]
    patches: tuple[Patch, ...] = ()
    user_key_ranges: tuple[str, ...] = ("31-50", "51-100", "101-250")
    base_users: int = 30
    _by_version: dict[str, Release] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_version.update({r.version: r for r in self.releases})

    def get(self, version: str) -> Release | None:
        """Return the release ``version`` (a two-part release or a four-part build), or None."""
        found = self._by_version.get(version)
        if found is not None:
            return found
        for release in self.releases:
            if release.build == version:
                return release
        return None

    def release(self, version: str) -> Release:
        """Return the release ``version``.

        Raises:
            KeyError: no such release in the catalogue.
        """
        found = self.get(version)
        if found is None:
            raise KeyError(version)
        return found

    def successor(self, version: str) -> Release | None:
        """Return the release after ``version`` in the chain, or None at its end (rule SEQ-1)."""
        index = self.release(version).index
        return self.releases[index + 1] if index + 1 < len(self.releases) else None

    def patch(self, build: str) -> Patch | None:
        """Return the patch build ``build``, or None."""
        return next((p for p in self.patches if p.build == build), None)

    def model(self, name: str) -> Model:
        """Return the model ``name``.

        Raises:
            KeyError: unknown model.
        """
        return self.models[name]

    def newest_for(self, model: str, on: date) -> Release:
        """Return the newest release published by ``on`` that ``model`` can run.

        Raises:
            KeyError: no release fits.
        """
        fits = [r for r in self.releases if r.supports(model) and r.date <= on]
        if not fits:
            raise KeyError(f"no release for {model} by {on}")
        return fits[-1]


def _require(entry: Mapping[str, Any], key: str, kind: type, file: str, name: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogError(file, name, f"field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise CatalogError(str(path), "(file)", f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(str(path), "(file)", f"not valid TOML: {exc}") from exc


def _parse_models(raw: Mapping[str, Any], file: str) -> dict[str, Model]:
    models: dict[str, Model] = {}
    entries = raw.get("model")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(file, "(file)", "no [[model]] entries")
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"model {name!r}" if isinstance(name, str) else f"model #{i + 1}"
        if not isinstance(entry, dict):
            raise CatalogError(file, label, "must be a table")
        family = _require(entry, "family", str, file, label)
        if family not in ("legacy", "connect"):
            raise CatalogError(file, label, f"family must be 'legacy' or 'connect', got {family!r}")
        model = Model(
            name=_require(entry, "name", str, file, label),
            family=family,
            capacity=_require(entry, "capacity", int, file, label),
            max_users=_require(entry, "max_users", int, file, label),
            list_price=_require(entry, "list_price", int, file, label),
        )
        if model.name in models:
            raise CatalogError(file, label, "duplicate model name")
        models[model.name] = model
    return models


def _parse_release(entry: Any, i: int, file: str, models: Mapping[str, Model]) -> Release:
    label = f"release #{i + 1}"
    if not isinstance(entry, dict):
        raise CatalogError(file, label, "must be a table")
    version = _require(entry, "version", str, file, label)
    label = f"release {version!r}"
    build = _require(entry, "build", str, file, label)
    if not build.startswith(version + "."):
        raise CatalogError(file, label, f"build {build!r} does not belong to release {version}")
    model_list = _require(entry, "models", list, file, label)
    for name in model_list:
        if name not in models:
            raise CatalogError(file, label, f"unknown model {name!r}")
    features = _require(entry, "features", list, file, label)
    if not all(isinstance(f, str) for f in features):
        raise CatalogError(file, label, "features must be strings")
    return Release(
        version=version,
        build=build,
        date=_require(entry, "date", date, file, label),
        db_schema=_require(entry, "db_schema", int, file, label),
        rebuilds_database=_require(entry, "rebuilds_database", bool, file, label),
        models=frozenset(model_list),
        phone_firmware=_require(entry, "phone_firmware", str, file, label),
        features=tuple(features),
        index=i,
    )


def _check_chain(releases: Sequence[Release], file: str) -> None:
    seen: set[str] = set()
    for prev, cur in itertools.pairwise(releases):
        if not prev.date < cur.date:
            raise CatalogError(file, f"release {cur.version!r}", "dates must increase along the chain")
        if cur.db_schema < prev.db_schema:
            raise CatalogError(file, f"release {cur.version!r}", "database schema goes backwards")
    for release in releases:
        if release.version in seen:
            raise CatalogError(file, f"release {release.version!r}", "duplicate version")
        seen.add(release.version)
    if sum(r.rebuilds_database for r in releases) > 1:
        raise CatalogError(file, "(file)", "more than one release rebuilds the database")


def load_catalog(catalog_file: Path = CATALOG_FILE, models_file: Path = MODELS_FILE) -> Catalog:
    """Load and validate the catalogue.

    Raises:
        CatalogError: a file is unreadable or an entry is malformed.
    """
    raw_models = _read_toml(models_file)
    models = _parse_models(raw_models, str(models_file))
    raw = _read_toml(catalog_file)
    entries = raw.get("release")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(str(catalog_file), "(file)", "no [[release]] entries")
    releases = tuple(_parse_release(e, i, str(catalog_file), models) for i, e in enumerate(entries))
    _check_chain(releases, str(catalog_file))
    versions = {r.version for r in releases}
    patches = []
    for i, entry in enumerate(raw.get("patch", [])):
        label = f"patch #{i + 1}"
        if not isinstance(entry, dict):
            raise CatalogError(str(catalog_file), label, "must be a table")
        patch = Patch(
            build=_require(entry, "build", str, str(catalog_file), label),
            release=_require(entry, "release", str, str(catalog_file), label),
            date=_require(entry, "date", date, str(catalog_file), label),
        )
        if patch.release not in versions:
            raise CatalogError(str(catalog_file), label, f"unknown release {patch.release!r}")
        patches.append(patch)
    return Catalog(
        releases=releases,
        models=models,
        patches=tuple(patches),
        user_key_ranges=tuple(raw_models.get("user_key_ranges", ("31-50", "51-100", "101-250"))),
        base_users=int(raw_models.get("base_users", 30)),
    )


@cache
def default_catalog() -> Catalog:
    """Return the packaged catalogue (loaded once)."""
    return load_catalog()


def version_key(version: str) -> tuple[int, ...]:
    """Return a sortable key for a dotted version or build."""
    return tuple(int(part) for part in version.split("."))
