"""The retained ``state`` document, built from the persisted server state.

Invariant: the state document is computed at publish time (the document itself is never kept)
from the server directory, through its :class:`~agent.store.ServerDir`, whose memories every write
through it updates (:mod:`agent.store`), so it always reflects the latest persisted state; its
core is exactly the ``allworx-agent status`` document.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from agent.documents import KeyReport, LastResult
from agent.keys import last_instant
from agent.mqtt.messages import MaintenanceKey, ResultSummary, StateDocument
from agent.store import ServerDir

_EARLIEST = datetime.min.replace(tzinfo=UTC)


def maintenance_key(keys: Sequence[KeyReport]) -> MaintenanceKey | None:
    """The key that decides upgrades: a valid maintenance key expiring last, else the best invalid one."""
    maintenance = [k for k in keys if k.kind == "maintenance"]
    if not maintenance:
        return None
    best = max(maintenance, key=lambda k: (k.valid, last_instant(k.expires) if k.expires else _EARLIEST))
    return MaintenanceKey(
        key_id=best.key_id, plan=best.plan, expires=best.expires, valid=best.valid, reason=best.reason
    )


def result_summary(result: LastResult | None) -> ResultSummary | None:
    """The last upgrade's outcome with the deciding step's reason code, rule and message on top."""
    if result is None:
        return None
    last = result.steps[-1] if result.steps and result.outcome != "succeeded" else None
    return ResultSummary(
        **dict(result),
        reason=last.reason if last else None,
        rule=last.rule if last else None,
        message=last.message if last else None,
    )


def state_document(server: ServerDir, site: str, now: datetime) -> StateDocument:
    """The retained state of ``server`` at ``now``.

    Raises:
        StoreError: the server directory is unreadable.
    """
    from agent.status import status_document

    status = status_document(server, now)
    return StateDocument.model_construct(  # the status document's typed values: no second validation
        serial=status.serial,
        model=status.model,
        site=site,
        release=status.release,
        build=status.build,
        db_schema=status.db_schema,
        state=status.state,
        maintenance_key=maintenance_key(status.keys),
        last_result=result_summary(status.last_result),
        updated_at=now,
        mac=status.mac,
        shipped=status.shipped,
        keys=status.keys,
        features_active=status.features_active,
        features_inactive=status.features_inactive,
        phone_firmware=status.phone_firmware,
    )
