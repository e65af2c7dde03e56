"""Creating a campaign from what the fleet reports (pure): members, targets, predictions, phases.

The inputs are the servers' retained state documents, which of them are online, and each online
server's answer to ``plan`` (its own planner, with its own keys). The same function makes the dry
run and the real campaign, so the dry run predicts exactly what the campaign will then do.

Decisions made here, never later:
- with ``spec.members``, only those servers are in the campaign, whatever else reports;
- a server that is offline (or never reported) ends ``offline`` (``SERVER_OFFLINE``);
- a server already on its target ends ``current``;
- a server whose very first step is refused ends ``rejected`` with the agent's reason (it would
  refuse the upgrade command the same way); one that can take some steps is started and ends
  ``rejected`` on the last release it could reach (SEQ-1);
- SITE-1 holds a network whose members cannot all reach the shared target (``SITE_ALIGNMENT_BLOCKED``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from agent.documents import PlanReport
from agent.mqtt.messages import StateDocument
from common.reasons import Reason
from fleet.campaign.documents import DryRunRow
from fleet.campaign.machine import MemberEvent, Why
from fleet.campaign.model import Campaign, Member
from fleet.campaign.plan import Prediction, align_targets, apply_site_rule, assign_phases, predict
from fleet.campaign.spec import CampaignSpec
from releases.catalog import Catalog, version_key


def targets(
    spec: CampaignSpec, states: Mapping[str, StateDocument], catalog: Catalog, now: datetime
) -> dict[str, str]:
    """Serial -> the release each server will be asked for (SITE-1 applied)."""
    models = {serial: doc.model for serial, doc in states.items()}
    releases = {serial: doc.release for serial, doc in states.items()}
    return align_targets(catalog, spec, models, releases, now.date())


def create(
    spec: CampaignSpec,
    states: Mapping[str, StateDocument],
    online: set[str],
    plans: Mapping[str, PlanReport],
    *,
    catalog: Catalog,
    now: datetime,
) -> Campaign:
    """Build the campaign (or the dry run) from the fleet's reports.

    Args:
        spec: the campaign.
        states: serial -> retained state document of every server in scope.
        online: the serials that are online.
        plans: serial -> the ``plan`` answer of each online server, for its target.
        catalog: the release catalogue.
        now: the campaign clock's instant.
    """
    if spec.members:  # the campaign touches its own servers only, whatever else reports
        own = set(spec.members)
        states = {serial: doc for serial, doc in states.items() if serial in own}
    wanted = targets(spec, states, catalog, now)
    predictions = {s: predict(plans[s]) for s in states if s in online and s in plans}
    releases = {s: doc.release for s, doc in states.items()}
    predictions, needing = apply_site_rule(spec, predictions, releases)
    order = sorted(states, key=lambda s: (version_key(releases[s] or "0"), states[s].site, s))
    phases = assign_phases(order, spec)
    phase_of = {s: i for i, members in enumerate(phases) for s in members}
    campaign = Campaign(spec=spec, created=now, members={}, phases=phases, needing_keys=needing)
    for serial in order:
        doc = states[serial]
        member = Member(
            serial=serial,
            site=doc.site,
            model=doc.model,
            release=releases[serial],
            target=wanted[serial],
            phase=phase_of[serial],
            current=releases[serial],
            prediction=predictions.get(serial),
            last_at=doc.last_result.at.isoformat() if doc.last_result else None,  # as published
        )
        campaign.members[serial] = member
        _settle(campaign, member, now)
    campaign.note(now, "created", servers=len(order), phases=len(phases))
    return campaign


def _settle(campaign: Campaign, member: Member, now: datetime) -> None:
    """Give an outcome now to every server the campaign will not start."""
    prediction = member.prediction
    if prediction is None:
        absent = "The server was offline when the campaign started."
        campaign.record(
            member.serial, MemberEvent.ABSENT, now, Why(Reason.SERVER_OFFLINE.value, "CAMPAIGN", absent)
        )
    elif prediction.outcome == "current":
        campaign.record(member.serial, MemberEvent.UP_TO_DATE, now)
    elif prediction.outcome == "rejected" and not prediction.steps:
        why = Why(prediction.reason, prediction.rule, prediction.message)
        campaign.record(member.serial, MemberEvent.REJECTED, now, why)


def dry_run(campaign: Campaign) -> list[DryRunRow]:
    """Per server: the phase, the target, the predicted steps, outcome, final release and refusal."""
    rows: list[DryRunRow] = []
    for member in campaign.members.values():
        prediction = member.prediction or Prediction(
            "offline", member.release, (), Reason.SERVER_OFFLINE.value, "CAMPAIGN", "offline"
        )
        rows.append(
            {
                "serial": member.serial,
                "site": member.site,
                "model": member.model,
                "release": member.release,
                "target": member.target,
                "phase": member.phase,
                **prediction.as_dict(),
            }
        )
    return rows
