"""``expect`` steps: observe a server or an order and compare with what the scenario expects.

Observations are normalised to the scenario file's own spelling (dates as ``YYYY-MM-DD``,
reason codes and rule IDs as strings, ``"none"`` for absence), lists of names compare as sets.

Semantics (docs/scenarios.md): ``refused``/``rule`` are the reason code and rule of the last
refusal of the last step that touched the server (``"none"`` when that step was not refused,
or none touched it); after a ``plan`` step, the next ``expect`` on that server reads the plan
(``release`` is where the plan would end, ``steps`` the releases it would install);
``records_intact`` compares the logical record digest of the active slot's database with the
one taken when the server was created; ``keys_intact`` holds when every key file installed at
creation is still installed, byte for byte (keys installed later do not matter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from agent import database
from agent.keys import KeyKind, active_features, last_instant, maintenance_state, user_range
from agent.policy import inactive_features
from simulator.scenario import model as m
from simulator.scenario.checks import NONE
from simulator.scenario.results import Failure
from simulator.scenario.world import ServerState, StepError, World, key_files
from simulator.vendor import read_warranty

Observer = Callable[[World, ServerState], Any]
_SETS = frozenset({"features", "inactive_features"})


def _refusal_field(attr: str) -> Observer:
    def observe(world: World, state: ServerState) -> Any:
        refusal = state.plan.refusal if state.plan is not None else state.refusal
        return str(getattr(refusal, attr)) if refusal is not None else NONE

    return observe


def _release(world: World, state: ServerState) -> Any:
    return state.plan.final_release if state.plan is not None else state.server.committed().version


def _build(world: World, state: ServerState) -> Any:
    if state.plan is not None:
        allowed = [s for s in state.plan.steps if s.allowed]
        return allowed[-1].build if allowed else state.server.committed().build
    return state.server.committed().build


def _records(world: World, state: ServerState) -> Any:
    now = database.digest(state.server.db_path(state.server.active_slot()))
    return now.counts == state.records.counts and now.checksum == state.records.checksum


def _keys(world: World, state: ServerState) -> Any:
    present = key_files(state.server)
    return all(present.get(name) == data for name, data in state.keys.items())


def _users(world: World, state: ServerState) -> Any:
    return database.user_count(state.server.db_path(state.server.active_slot()))


def _checks(world: World, state: ServerState) -> Any:
    return state.server.key_checks(world.today())


def _user_key(world: World, state: ServerState) -> Any:
    found = user_range(_checks(world, state))
    return f"{found[0]}-{found[1]}" if found else NONE


def _maintenance_expires(world: World, state: ServerState) -> Any:
    ends = [
        c.info.expires
        for c in _checks(world, state)
        if c.valid and c.info is not None and c.info.kind is KeyKind.MAINTENANCE and c.info.expires
    ]
    return max(ends, key=last_instant).isoformat() if ends else NONE


def _inactive(world: World, state: ServerState) -> Any:
    return list(inactive_features(world.catalog, state.server.committed().version, _checks(world, state)))


SERVER_OBSERVERS: dict[str, Observer] = {
    "release": _release,
    "build": _build,
    "refused": _refusal_field("reason"),
    "rule": _refusal_field("rule"),
    "records_intact": _records,
    "keys_intact": _keys,
    "users": _users,
    "features": lambda w, s: sorted(active_features(_checks(w, s))),
    "inactive_features": _inactive,
    "user_key": _user_key,
    "maintenance": lambda w, s: maintenance_state(_checks(w, s)),
    "maintenance_expires": _maintenance_expires,
    "key_count": lambda w, s: len(s.server.installed_keys()),
    "steps": lambda w, s: [v.release for v in s.plan.steps if v.allowed] if s.plan is not None else s.steps,
    "phone_firmware": lambda w, s: s.server.offered_phone_firmware() or NONE,
    "hardware_warranty_until": lambda w, s: read_warranty(s.server).hardware_until.isoformat(),
    "site_target": lambda w, s: s.site_target or NONE,
    "needs_maintenance_key": lambda w, s: s.site.needs_maintenance_key if s.site is not None else None,
}


def _order_values(world: World, step: m.Expect, name: str) -> dict[str, Any]:
    order_id = world.orders.get(name)
    if order_id is None:
        raise StepError(step, "order", f"order {name!r} was refused, so there is nothing to check")
    placed, bill = world.desk.get(order_id), world.desk.invoice(order_id, world.clock.now())
    return {
        "catalog_number": placed.catalog_number,
        "partner_price": placed.partner_price,
        "msrp": placed.msrp,
        "credit": placed.credit,
        "penalty": bill.penalty,
        "transfer_fee": placed.transfer_fee,
        "free_user_key": placed.free_user_key or NONE,
        "new_release": placed.new_release,
        "status": bill.status,
    }


def _spelled(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _same(name: str, expected: Any, observed: Any) -> bool:
    if name in _SETS and isinstance(observed, list):
        return sorted(expected) == sorted(observed)
    return bool(expected == observed)


def check_expect(world: World, step: m.Expect) -> list[Failure]:
    """Every field of ``step`` that does not match what is observed now."""
    failures = []
    if step.server is not None:
        state = world.state(step, step.server)
        wanted = {n: getattr(step, n) for n in m.SERVER_CHECKS if getattr(step, n) is not None}
        observed = {n: SERVER_OBSERVERS[n](world, state) for n in wanted}
        detail = state.plan.refusal if state.plan is not None else state.refusal
        state.plan = None  # a dry run is read by one expect
    else:
        if step.order is None:  # the static checks guarantee a server or an order
            raise RuntimeError("an expect step names neither a server nor an order")
        wanted = {n: getattr(step, n) for n in m.ORDER_CHECKS if getattr(step, n) is not None}
        observed, detail = _order_values(world, step, step.order), None
    for name, value in wanted.items():
        expected, seen = _spelled(value), _spelled(observed[name])
        if not _same(name, expected, seen):
            why = detail.message if detail is not None and name in ("refused", "rule", "release") else ""
            failures.append(Failure(step.index, step.KIND, name, expected, seen, why))
    return failures
