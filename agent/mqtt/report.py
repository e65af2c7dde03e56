"""The retained ``state`` document and ``events`` messages, built from the persisted server state.

Invariant: the state document is computed from the server directory at publish time (never
cached), so it always reflects the latest persisted state; its core is exactly the
``allworx-agent status`` document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.mqtt.messages import EventMessage, MaintenanceKey, StateDocument
from agent.store import ServerDir


def maintenance_key(keys: list[dict[str, Any]]) -> MaintenanceKey | None:
    """The key that decides upgrades: a valid maintenance key expiring last, else the best invalid one."""
    maintenance = [k for k in keys if k.get("kind") == "maintenance"]
    if not maintenance:
        return None
    best = max(maintenance, key=lambda k: (bool(k.get("valid")), k.get("expires") or ""))
    return MaintenanceKey(
        key_id=best.get("key_id"),
        plan=best.get("plan"),
        expires=best.get("expires"),
        valid=bool(best.get("valid")),
        reason=best.get("reason"),
    )


def result_summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last upgrade's outcome with the deciding step's reason code, rule and message on top."""
    if result is None:
        return None
    summary = dict(result)
    steps = result.get("steps") or []
    last = steps[-1] if steps and isinstance(steps[-1], dict) else {}
    for field in ("reason", "rule", "message"):
        summary[field] = last.get(field) if result.get("outcome") != "succeeded" else None
    return summary


def state_document(server: ServerDir, site: str, now: datetime) -> StateDocument:
    """The retained state of ``server`` at ``now``.

    Raises:
        StoreError: the server directory is unreadable.
    """
    from agent.status import status_document

    status = status_document(server, now)
    status.pop("now", None)
    status.update(
        site=site,
        maintenance_key=maintenance_key(status["keys"]),
        last_result=result_summary(status.get("last_result")),
        updated_at=now,
    )
    return StateDocument.model_validate(status)


def event_message(event: dict[str, Any], *, serial: str, site: str, at: datetime) -> dict[str, Any]:
    """The JSON form of an upgrade event about to enter the outbox (the outbox adds ``seq``)."""
    document = {**event, "schema": 1, "serial": serial, "site": site, "at": at.isoformat()}
    EventMessage.model_validate({**document, "seq": 1})  # the documented shape, checked before it is stored
    return document
