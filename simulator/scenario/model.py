"""The scenario file format (a public contract, docs/scenarios.md): typed steps and their parser.

A scenario is a TOML file: a title, a start date, the servers it creates (``[[server]]``) and
the steps it runs (``[[step]]``, each with ``do = KIND``). Every step kind is a frozen pydantic
model below (:class:`~common.validation.FileModel`: unknown keys refused, strict types); its
fields *are* the format: a field's TOML key is its alias (``as``, ``from``), else its own name.

Parsing lives in :mod:`simulator.scenario.parse` (TOML, then each table validated by its model)
and :mod:`simulator.scenario.checks` (references, reason codes, rule IDs, dates): a problem is a
:class:`~common.validation.Problem` naming the file, the server or step (1-based, as a reader
counts ``[[step]]`` tables) and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from common.validation import FileModel, InputError, IsoDate
from simulator.portal import Damage


class ScenarioFileError(InputError):
    """A scenario file is malformed; ``problems`` lists everything found, each with file/step/field."""


class _Table(FileModel):
    """A ``[[server]]`` or ``[[step]]`` table; its 1-based position comes from the parser's context."""

    _index: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _numbered(self, info: ValidationInfo) -> Self:
        context: dict[str, Any] = info.context or {}
        self._index = int(context.get("index", 0))
        return self

    @property
    def index(self) -> int:
        """The table's position in the file (1-based, as a reader counts them)."""
        return self._index


# ---------------------------------------------------------------------------- servers and steps


class ServerDecl(_Table):
    """A ``[[server]]`` table: a virtual server the scenario creates before its first step."""

    name: str
    model: str
    release: str
    shipped: IsoDate | None = None  # default: the release's date, as the simulator does
    users: int | None = None
    site: str | None = None
    network: str | None = None
    serial: str | None = None  # default: derived from the scenario file and the name
    call_log_rows: int | None = None


class Step(_Table):
    """Fields every step kind has."""

    KIND: ClassVar[str] = ""
    REFUSABLE: ClassVar[bool] = False  # may carry expect_refused
    expect_refused: str | None = None
    note: str | None = None

    def where(self) -> str:
        """How problems and failures name this step."""
        return f"step {self.index} ({self.KIND})"


class Advance(Step):
    """Move the scenario clock to a date or by a number of days."""

    KIND = "advance"
    to: IsoDate | None = None
    days: int | None = None


KeyKindName = Literal["maintenance", "feature", "users", "patch"]
PlanName = Literal["ship-90d", "anytime-1y", "bundle-5y", "temporary"]


class IssueKey(Step):
    """The vendor issues a key for ``server`` (or ``for_server``'s serial) and, by default, installs it."""

    KIND = "issue-key"
    REFUSABLE = True
    server: str
    kind: KeyKindName
    plan: PlanName | None = None
    start: IsoDate | None = None  # default: the scenario's current date
    expires: IsoDate | None = None
    ceiling: str | None = None
    feature: str | None = None
    users: str | None = None
    patch_build: str | None = None
    count: int | None = None
    install: bool = True
    for_server: str | None = None
    tamper: bool = False
    name: str | None = Field(default=None, alias="as")


class InstallKey(Step):
    """Install a key issued earlier (``issue-key`` with ``as``) on ``server``."""

    KIND = "install-key"
    REFUSABLE = True
    server: str
    key: str


class RevokeKey(Step):
    """The vendor revokes a key issued earlier (its ``as``); every server installs the new list (SWM-2)."""

    KIND = "revoke-key"
    key: str


class TamperImage(Step):
    """Damage one release's download in this scenario's copy of the vendor's portal (rule IMG-1)."""

    KIND = "tamper-image"
    release: str  # a release version (its build) or a patch build
    how: Damage = "byte"


class Upgrade(Step):
    """Ask the agent to take ``server`` to release ``to`` (planned single steps, SEQ-1)."""

    KIND = "upgrade"
    REFUSABLE = True
    server: str
    to: str
    power_cut: str | None = None  # "random" or a crash point name
    seed: int = 0


class Install(Step):
    """Install exactly one uploaded release image, no planning."""

    KIND = "install"
    REFUSABLE = True
    server: str
    release: str
    power_cut: str | None = None
    seed: int = 0


class PlanStep(Step):
    """A dry run: what an upgrade to ``to`` would do now (checked by the next ``expect``)."""

    KIND = "plan"
    REFUSABLE = True
    server: str
    to: str


class Order(Step):
    """A trade-in or trade-up order at the vendor desk; ``as`` names the order and the new server."""

    KIND = "order"
    REFUSABLE = True
    type: Literal["trade-in", "trade-up"]
    server: str
    new_model: str
    key_transfer: bool = False
    functional: bool = True
    name: str = Field(alias="as")


class Return(Step):
    """The old server of an order goes back to the vendor (TRADE-3)."""

    KIND = "return"
    server: str


class Migrate(Step):
    """Allworx Migrate from one server to another (MIG-1)."""

    KIND = "migrate"
    REFUSABLE = True
    source: str = Field(alias="from")
    to: str


class SiteCheck(Step):
    """Check a multi-site network (SITE-1); each member's status is what later expects read."""

    KIND = "site-check"
    network: str
    target: str | None = None


class Purchase(Step):
    """Buy a warranty or maintenance plan for ``server`` (SWM-5)."""

    KIND = "purchase"
    REFUSABLE = True
    server: str
    option: Literal["hw-5y", "bundle-5y", "anytime-1y"]


class TemporaryKey(Step):
    """The vendor issues and installs a temporary upgrade key with a ceiling release (MIG-2)."""

    KIND = "temporary-key"
    REFUSABLE = True
    server: str
    ceiling: str = "8.0"


Maintenance = Literal["valid", "expired", "none"]
InvoiceStatus = Literal["awaiting-return", "returned", "penalty"]


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
    maintenance_expires: IsoDate | Literal["none"] | None = None
    key_count: int | None = None
    steps: list[str] | None = None
    phone_firmware: str | None = None
    hardware_warranty_until: IsoDate | None = None
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


class Header(FileModel):
    """The top-level fields of a scenario file."""

    title: str
    start: IsoDate  # the simulated date when the scenario starts (midnight UTC)
    description: str | None = None
    rules: list[str] = Field(default_factory=list)  # rule IDs the scenario exercises


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A parsed, validated scenario file (put together by the parser from validated tables)."""

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
