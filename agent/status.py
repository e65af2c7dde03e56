"""The server's status document: what ``allworx-agent status`` prints and MQTT's retained state carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.policy import active_features, inactive_features
from agent.store import ServerDir, checks_json
from releases.catalog import default_catalog


def status_document(server: ServerDir, now: datetime) -> dict[str, Any]:
    """The ``status`` document (also the MQTT retained state's core)."""
    ident, info = server.identity(), server.committed()
    checks = server.key_checks(now.date())
    catalog = default_catalog()
    job = server.load_job()
    return {
        "serial": ident.serial,
        "model": ident.model,
        "mac": ident.mac,
        "site": ident.site,
        "shipped": ident.shipped.isoformat(),
        "release": info.version,
        "build": info.build,
        "db_schema": info.db_schema,
        "state": job.state if job else "idle",
        "keys": checks_json(checks),
        "features_active": list(active_features(checks)),
        "features_inactive": list(inactive_features(catalog, info.version, checks)),
        "phone_firmware": server.offered_phone_firmware(),
        "last_result": server.last_result(),
        "now": now.isoformat(),
    }
