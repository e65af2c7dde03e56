"""The server's status document: what ``allworx-agent status`` prints and MQTT's retained state carries."""

from __future__ import annotations

from datetime import date, datetime

from agent.documents import IsoTime, KeyReport, LastResult, Wire
from agent.policy import active_features, inactive_features
from agent.store import ServerDir, key_reports
from releases.catalog import default_catalog


class StatusDocument(Wire):
    """The ``allworx-agent status --json`` document (the retained MQTT state's core)."""

    serial: str
    model: str
    mac: str
    site: str
    """The site in identity.json (the MQTT state names the site the agent serves instead)."""
    shipped: date
    release: str
    """The committed release."""
    build: str
    db_schema: int
    """The database schema of the committed release."""
    state: str
    """``idle``, or the persisted upgrade state (``staging`` ... ``committed``, ``rolling_back``,
    ``rolled_back``; ``unknown`` for an unreadable journal)."""
    keys: tuple[KeyReport, ...]
    features_active: tuple[str, ...]
    """Feature keys in force."""
    features_inactive: tuple[str, ...]
    """Optional features of the running release without a valid feature key (rule SWM-6)."""
    phone_firmware: str | None
    """The phone firmware offered to the phones (rule PHONE-1)."""
    last_result: LastResult | None
    now: IsoTime


def status_document(server: ServerDir, now: datetime) -> StatusDocument:
    """The ``status`` document (also the MQTT retained state's core).

    Raises:
        StoreError: the server directory is unreadable.
    """
    ident, info = server.identity(), server.committed()
    checks = server.key_checks(now)
    catalog = default_catalog()
    job = server.load_job()
    return StatusDocument.model_construct(  # typed values read and checked above: no second validation
        serial=ident.serial,
        model=ident.model,
        mac=ident.mac,
        site=ident.site,
        shipped=ident.shipped,
        release=info.version,
        build=info.build,
        db_schema=info.db_schema,
        state=job.state if job else "idle",
        keys=key_reports(checks),
        features_active=active_features(checks),
        features_inactive=inactive_features(catalog, info.version, checks),
        phone_firmware=server.offered_phone_firmware(),
        last_result=server.last_result(),
        now=now,
    )
