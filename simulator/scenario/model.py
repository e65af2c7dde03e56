"""The scenario file format (a public contract, docs/scenarios.md): typed steps and their parser.

A scenario is a TOML file: a title, a start date, the servers it creates (``[[server]]``) and
the steps it runs (``[[step]]``, each with ``do = KIND``). Every step kind is a frozen dataclass
below; its fields *are* the format: the parser derives the allowed TOML keys, their types and
which are required from the dataclass (a field's TOML name is its ``toml`` metadata, else its
own name).

Parsing lives in :mod:`simulator.scenario.parse` (types, required and unknown fields) and
:mod:`simulator.scenario.checks` (references, reason codes, rule IDs, dates): a problem is a
:class:`Problem` naming the file, the server or step (1-based, as a reader counts ``[[step]]``
tables) and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import ClassVar, Literal

from common.errors import AllworxError
from simulator.portal import Damage


def toml_name(name: str) -> dict[str, str]:
    """Field metadata giving a field's TOML key (for keys that are Python keywords)."""
    return {"toml": name}


INTERNAL = {"internal": "yes"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a scenario file."""

    file: str
    where: str  # "", "step 3 (upgrade)", "server 1 ('hq')"
    field: str | None
    message: str

    def __str__(self) -> str:
        place = ", ".join(p for p in (self.where, f"field '{self.field}'" if self.field else "") if p)
        return f"{self.file}: {place}: {self.message}" if place else f"{self.file}: {self.message}"


class ScenarioFileError(AllworxError):
    """A scenario file is malformed; ``problems`` lists everything found, each with file/step/field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


# ---------------------------------------------------------------------------- servers and steps


@dataclass(frozen=True, kw_only=True)
class ServerDecl:
    """A ``[[server]]`` table: a virtual server the scenario creates before its first step."""

    index: int = field(default=0, metadata=INTERNAL)
    name: str
    model: str
    release: str
    shipped: date | None = None  # default: the release's date, as the simulator does
    users: int | None = None
    site: str | None = None
    network: str | None = None
    serial: str | None = None  # default: derived from the scenario file and the name
    call_log_rows: int | None = None


@dataclass(frozen=True, kw_only=True)
class Step:
    """Fields every step kind has."""

    KIND: ClassVar[str] = ""
    REFUSABLE: ClassVar[bool] = False  # may carry expect_refused
    index: int = field(default=0, metadata=INTERNAL)
    expect_refused: str | None = None
    note: str | None = None

    def where(self) -> str:
        """How problems and failures name this step."""
        return f"step {self.index} ({self.KIND})"


@dataclass(frozen=True, kw_only=True)
class Advance(Step):
    """Move the scenario clock to a date or by a number of days."""

    KIND = "advance"
    to: date | None = None
    days: int | None = None


KeyKindName = Literal["maintenance", "feature", "users", "patch"]
PlanName = Literal["ship-90d", "anytime-1y", "bundle-5y", "temporary"]


@dataclass(frozen=True, kw_only=True)
class IssueKey(Step):
    """The vendor issues a key for ``server`` (or ``for_server``'s serial) and, by default, installs it."""

    KIND = "issue-key"
    REFUSABLE = True
    server: str
    kind: KeyKindName
    plan: PlanName | None = None
    start: date | None = None  # default: the scenario's current date
    expires: date | None = None
    ceiling: str | None = None
    feature: str | None = None
    users: str | None = None
    patch_build: str | None = None
    count: int | None = None
    install: bool = True
    for_server: str | None = None
    tamper: bool = False
    name: str | None = field(default=None, metadata=toml_name("as"))


@dataclass(frozen=True, kw_only=True)
class InstallKey(Step):
    """Install a key issued earlier (``issue-key`` with ``as``) on ``server``."""

    KIND = "install-key"
    REFUSABLE = True
    server: str
    key: str


@dataclass(frozen=True, kw_only=True)
class RevokeKey(Step):
    """The vendor revokes a key issued earlier (its ``as``); every server installs the new list (SWM-2)."""

    KIND = "revoke-key"
    key: str


@dataclass(frozen=True, kw_only=True)
class TamperImage(Step):
    """Damage one release's download in this scenario's copy of the vendor's portal (rule IMG-1)."""

    KIND = "tamper-image"
    release: str  # a release version (its build) or a patch build
    how: Damage = "byte"


@dataclass(frozen=True, kw_only=True)
class Upgrade(Step):
    """Ask the agent to take ``server`` to release ``to`` (planned single steps, SEQ-1)."""

    KIND = "upgrade"
    REFUSABLE = True
    server: str
    to: str
    power_cut: str | None = None  # "random" or a crash point name
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class Install(Step):
    """Install exactly one uploaded release image, no planning."""

    KIND = "install"
    REFUSABLE = True
    server: str
    release: str
    power_cut: str | None = None
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class PlanStep(Step):
    """A dry run: what an upgrade to ``to`` would do now (checked by the next ``expect``)."""

    KIND = "plan"
    REFUSABLE = True
    server: str
    to: str


@dataclass(frozen=True, kw_only=True)
class Order(Step):
    """A trade-in or trade-up order at the vendor desk; ``as`` names the order and the new server."""

    KIND = "order"
    REFUSABLE = True
    type: Literal["trade-in", "trade-up"]
    server: str
    new_model: str
    key_transfer: bool = False
    functional: bool = True
    name: str = field(metadata=toml_name("as"))


@dataclass(frozen=True, kw_only=True)
class Return(Step):
    """The old server of an order goes back to the vendor (TRADE-3)."""

    KIND = "return"
    server: str


@dataclass(frozen=True, kw_only=True)
class Migrate(Step):
    """Allworx Migrate from one server to another (MIG-1)."""

    KIND = "migrate"
    REFUSABLE = True
    source: str = field(metadata=toml_name("from"))
    to: str


@dataclass(frozen=True, kw_only=True)
class SiteCheck(Step):
    """Check a multi-site network (SITE-1); each member's status is what later expects read."""

    KIND = "site-check"
    network: str
    target: str | None = None


@dataclass(frozen=True, kw_only=True)
class Purchase(Step):
    """Buy a warranty or maintenance plan for ``server`` (SWM-5)."""

    KIND = "purchase"
    REFUSABLE = True
    server: str
    option: Literal["hw-5y", "bundle-5y", "anytime-1y"]


@dataclass(frozen=True, kw_only=True)
class TemporaryKey(Step):
    """The vendor issues and installs a temporary upgrade key with a ceiling release (MIG-2)."""

    KIND = "temporary-key"
    REFUSABLE = True
    server: str
    ceiling: str = "8.0"


Maintenance = Literal["valid", "expired", "none"]
InvoiceStatus = Literal["awaiting-return", "returned", "penalty"]


@dataclass(frozen=True, kw_only=True)
class Expect(Step):
    """Check a server (``server``) or an order (``order``); every given field must match."""

    KIND = "expect"
    server: str | None = None
    order: str | None = None
    # server checks
    release: str | None = None
    build: str | None = None
    refused: str | None = None
    rule: str | None = None
    records_intact: bool | None = None
    keys_intact: bool | None = None
    users: int | None = None
    features: list[str] | None = None
    inactive_features: list[str] | None = None
    user_key: str | None = None
    maintenance: Maintenance | None = None
    maintenance_expires: date | Literal["none"] | None = None
    key_count: int | None = None
    steps: list[str] | None = None
    phone_firmware: str | None = None
    hardware_warranty_until: date | None = None
    site_target: str | None = None
    needs_maintenance_key: bool | None = None
    # order checks
    catalog_number: str | None = None
    partner_price: int | None = None
    msrp: int | None = None
    credit: int | None = None
    penalty: int | None = None
    transfer_fee: int | None = None
    free_user_key: str | None = None
    new_release: str | None = None
    status: InvoiceStatus | None = None


SERVER_CHECKS = (
    "release", "build", "refused", "rule", "records_intact", "keys_intact", "users", "features",
    "inactive_features", "user_key", "maintenance", "maintenance_expires", "key_count", "steps",
    "phone_firmware", "hardware_warranty_until", "site_target", "needs_maintenance_key",
)  # fmt: skip
ORDER_CHECKS = (
    "catalog_number", "partner_price", "msrp", "credit", "penalty", "transfer_fee", "free_user_key",
    "new_release", "status",
)  # fmt: skip

STEP_KINDS: dict[str, type[Step]] = {
    cls.KIND: cls
    for cls in (Advance, IssueKey, InstallKey, RevokeKey, TamperImage, Upgrade, Install, PlanStep, Order,
                Return, Migrate, SiteCheck, Purchase, TemporaryKey, Expect)
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Header:
    """The top-level fields of a scenario file."""

    title: str
    start: date  # the simulated date when the scenario starts (midnight UTC)
    description: str | None = None
    rules: list[str] = field(default_factory=list)  # rule IDs the scenario exercises


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A parsed, validated scenario file."""

    path: Path
    title: str
    start: date
    description: str | None = None
    rules: list[str] = field(default_factory=list)
    servers: tuple[ServerDecl, ...] = ()
    steps: tuple[Step, ...] = ()

    def asserted_rules(self) -> set[str]:
        """Rule IDs some ``expect`` checks with ``rule = ...`` (the rules it demonstrably asserts)."""
        return {s.rule for s in self.steps if isinstance(s, Expect) and s.rule not in (None, "none")}
