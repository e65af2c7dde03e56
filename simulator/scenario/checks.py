"""Static checks of a parsed scenario, before anything runs.

Checked here (types are checked by the parser): server declarations against the catalogue;
every reference to a server, an order, an issued key or a network is to one declared *earlier*
(``[[server]]`` tables, an ``order``'s ``as``, an ``issue-key``'s ``as``); reason codes are
:class:`~common.reasons.Reason` values; rule IDs are those of docs/rules.md; ``advance`` never
goes back in time; each step carries only the fields that make sense for it (a ceiling only on a
temporary key...).

Invariant: :func:`check_scenario` raises one :class:`ScenarioFileError` listing every problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from agent.crashpoints import REGISTRY
from common.reasons import DOMAIN_RULES, PRODUCT_RULES, Reason
from common.validation import Problem
from releases.catalog import Catalog, default_catalog
from simulator.scenario.model import (
    ORDER_CHECKS,
    SERVER_CHECKS,
    Advance,
    Expect,
    Install,
    InstallKey,
    IssueKey,
    Migrate,
    Order,
    PlanStep,
    Purchase,
    Return,
    RevokeKey,
    Scenario,
    ScenarioFileError,
    ServerDecl,
    SiteCheck,
    Step,
    TamperImage,
    TemporaryKey,
    Upgrade,
)

RULE_IDS = DOMAIN_RULES  # the rules a scenario's ``rules`` may claim (docs/rules.md)
NONE = "none"
REASON_CODES = frozenset(r.value for r in Reason)
POWER_CUTS = ("random", *REGISTRY)
_RANGE = re.compile(r"\d{1,6}-\d{1,6}")
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,39}")
# issue-key: the fields each key kind may carry besides the common ones
_KEY_FIELDS = {
    "maintenance": {"plan", "ceiling", "expires"},
    "feature": {"feature", "count", "expires"},
    "users": {"users", "count", "expires"},
    "patch": {"patch_build", "expires"},
}
_KEY_NEEDS = {"maintenance": "plan", "feature": "feature", "users": "users", "patch": "patch_build"}


@dataclass
class _Context:
    """What is declared so far, walking the steps in order."""

    file: str
    catalog: Catalog
    today: date
    servers: dict[str, str | None] = field(default_factory=dict)  # name -> network
    orders: dict[str, str] = field(default_factory=dict)  # order name -> old server name
    keys: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def add(self, step: Step | None, name: str | None, message: str) -> None:
        where = step.where() if step is not None else ""
        self.problems.append(Problem(self.file, where, name, message))

    def server(self, step: Step, name: str, value: str | None) -> None:
        if value is not None and value not in self.servers:
            declared = ", ".join(repr(s) for s in self.servers) or "none"
            self.add(step, name, f"server {value!r} is not declared before this step (declared: {declared})")


def check_scenario(scenario: Scenario) -> None:
    """Check references, codes, rule IDs and dates.

    Raises:
        ScenarioFileError: every problem found, each naming the file, the step and the field.
    """
    ctx = _Context(str(scenario.path), default_catalog(), scenario.start)
    if not scenario.title.strip():
        ctx.add(None, "title", "must not be empty")
    for rule in scenario.rules:
        if rule not in RULE_IDS:  # a scenario claims coverage of domain rules only
            ctx.add(None, "rules", f"unknown rule ID {rule!r} (domain rules: {', '.join(RULE_IDS)})")
    for decl in scenario.servers:
        _check_server(ctx, decl)
    for step in scenario.steps:
        _check_common(ctx, step)
        _CHECKS[type(step)](ctx, step)
    if not any(isinstance(s, Expect) or s.expect_refused is not None for s in scenario.steps):
        ctx.add(None, "step", "the scenario checks nothing: add an expect step or a step with expect_refused")
    if ctx.problems:
        raise ScenarioFileError(ctx.problems)


def _check_server(ctx: _Context, decl: ServerDecl) -> None:
    where = f"server {decl.index} ({decl.name!r})"

    def bad(name: str, message: str) -> None:
        ctx.problems.append(Problem(ctx.file, where, name, message))

    if decl.name in ctx.servers:
        bad("name", f"server {decl.name!r} is declared twice")
    ctx.servers[decl.name] = decl.network
    if decl.network is not None:
        ctx.networks.add(decl.network)
    model = ctx.catalog.models.get(decl.model)
    if model is None:
        bad("model", f"unknown model {decl.model!r} (known: {', '.join(ctx.catalog.models)})")
    release = ctx.catalog.get(decl.release)
    if release is None:
        bad("release", f"unknown release {decl.release!r}")
    elif model is not None and not release.supports(model.name):  # rule REL-1
        bad("release", f"an Allworx {model.name} cannot run release {release.version} (rule REL-1)")
    if decl.users is not None and model is not None and not 0 <= decl.users <= model.max_users:
        bad("users", f"must be between 0 and {model.max_users} for a {model.name}")
    if decl.serial is not None and not _SERIAL.fullmatch(decl.serial):
        bad("serial", "must be letters, digits and dashes, e.g. AWX0000123")
    if decl.call_log_rows is not None and decl.call_log_rows < 0:
        bad("call_log_rows", "must not be negative")


def _check_common(ctx: _Context, step: Step) -> None:
    code = step.expect_refused
    if code is None:
        return
    if not step.REFUSABLE:
        ctx.add(
            step,
            "expect_refused",
            f"{_article(step.KIND)} {step.KIND} step is never refused, so it cannot expect a refusal",
        )
    elif code != NONE and code not in REASON_CODES:
        ctx.add(step, "expect_refused", f"unknown reason code {code!r}")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _check_advance(ctx: _Context, step: Advance) -> None:
    if (step.to is None) == (step.days is None):
        ctx.add(step, "to", "give exactly one of 'to' (a date) and 'days'")
        return
    if step.days is not None:
        room = (date.max - ctx.today).days  # a calendar ends on 9999-12-31
        if step.days < 1:
            ctx.add(step, "days", f"must be at least 1, got {step.days}")
        elif step.days > room:
            ctx.add(step, "days", f"goes past {date.max.isoformat()}: at most {room} days from here")
        else:
            ctx.today += timedelta(days=step.days)
    elif step.to is not None:
        if step.to < ctx.today:
            ctx.add(step, "to", f"dates out of order: {step.to.isoformat()} is before the scenario's date at "
                                f"this step ({ctx.today.isoformat()}); time never goes back")  # fmt: skip
        ctx.today = max(ctx.today, step.to)


def _check_issue_key(ctx: _Context, step: IssueKey) -> None:
    ctx.server(step, "server", step.server)
    ctx.server(step, "for_server", step.for_server)
    given = {n for n in ("plan", "ceiling", "expires", "feature", "users", "patch_build", "count")
             if getattr(step, n) is not None}  # fmt: skip
    for name in sorted(given - _KEY_FIELDS[step.kind]):
        ctx.add(step, name, f"a {step.kind} key does not carry {name!r}")
    need = _KEY_NEEDS[step.kind]
    if need not in given:
        ctx.add(step, need, f"a {step.kind} key needs {need!r}")
    if step.plan == "temporary" and step.ceiling is None:
        ctx.add(step, "ceiling", "a temporary maintenance key needs a ceiling release (rule MIG-2)")
    if step.ceiling is not None and step.plan not in (None, "temporary"):
        ctx.add(step, "ceiling", "only a temporary maintenance key carries a ceiling")
    if step.ceiling is not None and ctx.catalog.get(step.ceiling) is None:
        ctx.add(step, "ceiling", f"unknown release {step.ceiling!r}")
    if step.users is not None and not _RANGE.fullmatch(step.users):
        ctx.add(step, "users", f'must be a user range such as "51-100", got {step.users!r}')
    if step.count is not None and step.count < 1:
        ctx.add(step, "count", "must be at least 1")
    if step.expect_refused is not None and not step.install:
        ctx.add(step, "expect_refused", "a key that is not installed cannot be refused (install = false)")
    if step.name is not None:
        if step.name in ctx.keys:
            ctx.add(step, "as", f"a key named {step.name!r} was already issued")
        ctx.keys.add(step.name)
    elif not step.install:
        ctx.add(
            step, "as", "a key that is not installed needs a name ('as') so a later install-key can use it"
        )


def _check_install_key(ctx: _Context, step: InstallKey) -> None:
    ctx.server(step, "server", step.server)
    _check_key_name(ctx, step, step.key)


def _check_revoke_key(ctx: _Context, step: RevokeKey) -> None:
    _check_key_name(ctx, step, step.key)


def _check_key_name(ctx: _Context, step: Step, key: str) -> None:
    if key not in ctx.keys:
        known = ", ".join(repr(k) for k in sorted(ctx.keys)) or "none"
        ctx.add(step, "key", f"no key named {key!r} was issued before this step (issued: {known})")


def _check_tamper(ctx: _Context, step: TamperImage) -> None:
    if ctx.catalog.get(step.release) is None and ctx.catalog.patch(step.release) is None:
        ctx.add(step, "release", f"unknown release or patch build {step.release!r}")


def _check_upgrade(ctx: _Context, step: Upgrade | Install) -> None:
    ctx.server(step, "server", step.server)
    if step.power_cut is not None and step.power_cut not in POWER_CUTS:
        ctx.add(step, "power_cut", f"must be 'random' or a crash point ({', '.join(REGISTRY)})")


def _check_server_only(ctx: _Context, step: Step) -> None:
    ctx.server(step, "server", getattr(step, "server", None))


def _check_order(ctx: _Context, step: Order) -> None:
    ctx.server(step, "server", step.server)
    if step.new_model not in ctx.catalog.models:
        ctx.add(
            step, "new_model", f"unknown model {step.new_model!r} (known: {', '.join(ctx.catalog.models)})"
        )
    if step.name in ctx.servers or step.name in ctx.orders:
        ctx.add(step, "as", f"{step.name!r} already names a server or an order")
        return
    network = ctx.servers.get(step.server)
    ctx.servers[step.name] = network  # the new server takes the old one's place in its network
    if step.server in ctx.servers:
        ctx.servers[step.server] = None
    ctx.orders[step.name] = step.server


def _check_return(ctx: _Context, step: Return) -> None:
    ctx.server(step, "server", step.server)
    if step.server in ctx.servers and step.server not in ctx.orders.values():
        ctx.add(step, "server", f"server {step.server!r} is not the old server of an earlier order")


def _check_migrate(ctx: _Context, step: Migrate) -> None:
    ctx.server(step, "from", step.source)
    ctx.server(step, "to", step.to)
    if step.source == step.to:
        ctx.add(step, "to", "Migrate needs two different servers")


def _check_site(ctx: _Context, step: SiteCheck) -> None:
    if step.network not in ctx.networks:
        known = ", ".join(repr(n) for n in sorted(ctx.networks)) or "none"
        ctx.add(step, "network", f"no server is declared in network {step.network!r} (networks: {known})")
    if step.target is not None and ctx.catalog.get(step.target) is None:
        ctx.add(step, "target", f"unknown release {step.target!r}")


def _check_temporary(ctx: _Context, step: TemporaryKey) -> None:
    ctx.server(step, "server", step.server)
    if ctx.catalog.get(step.ceiling) is None:
        ctx.add(step, "ceiling", f"unknown release {step.ceiling!r}")


def _check_expect(ctx: _Context, step: Expect) -> None:
    if (step.server is None) == (step.order is None):
        ctx.add(step, "server", "give exactly one of 'server' (check a server) and 'order' (check an order)")
        return
    own, other = (SERVER_CHECKS, ORDER_CHECKS) if step.server is not None else (ORDER_CHECKS, SERVER_CHECKS)
    subject = "server" if step.server is not None else "order"
    for name in other:
        if getattr(step, name) is not None:
            ctx.add(step, name, f"is not something an expect on {_article(subject)} "
                                f"{subject} checks (it checks: {', '.join(own)})")  # fmt: skip
    if all(getattr(step, name) is None for name in own):
        ctx.add(step, subject, f"checks nothing: give at least one of {', '.join(own)}")
    if step.server is not None:
        ctx.server(step, "server", step.server)
    elif step.order not in ctx.orders:
        ctx.add(step, "order", f"no order named {step.order!r} was placed before this step")
    if step.refused is not None and step.refused != NONE and step.refused not in REASON_CODES:
        ctx.add(step, "refused", f"unknown reason code {step.refused!r}")
    if step.rule is not None and step.rule != NONE and step.rule not in (*RULE_IDS, *PRODUCT_RULES):
        known = ", ".join((*RULE_IDS, *PRODUCT_RULES))
        ctx.add(step, "rule", f"unknown rule ID {step.rule!r} (known: {known})")
    if step.user_key is not None and step.user_key != NONE and not _RANGE.fullmatch(step.user_key):
        ctx.add(step, "user_key", f'must be a user range such as "51-100" or "none", got {step.user_key!r}')


_CHECKS: dict[type[Step], Callable[[_Context, Any], None]] = {
    Advance: _check_advance,
    IssueKey: _check_issue_key,
    InstallKey: _check_install_key,
    RevokeKey: _check_revoke_key,
    TamperImage: _check_tamper,
    Upgrade: _check_upgrade,
    Install: _check_upgrade,
    Order: _check_order,
    Return: _check_return,
    Migrate: _check_migrate,
    SiteCheck: _check_site,
    PlanStep: _check_server_only,
    Purchase: _check_server_only,
    TemporaryKey: _check_temporary,
    Expect: _check_expect,
}
