"""The campaign's plan (pure): each server's target, its phase, and the dry run's prediction.

- Target: the campaign's release, or with ``newest`` the newest release the server's model can
  run at ``now`` (``Catalog.newest_for``).
- SITE-1: the members of a multi-site network share one target, :func:`agent.site.network_target`
  (the vendor's site check uses the same): the newest release a member runs, or the oldest
  release the campaign asks of any member when that is newer (so the network ends on one
  release). When any member's plan would not reach it (no maintenance key, a model limit, a
  downgrade), the whole network is held: no member moves, so none drifts further apart; the
  blocking members are listed as needing a key when a maintenance key purchase would unblock them
  (:func:`agent.site.needs_maintenance_key`).
- Phases: the canary first, then batches; a network never straddles two phases.
- The prediction of a server comes from its own ``plan`` answer (the agent's planner, with its
  keys at ``now``); the dry run is those predictions after SITE-1, and the real run takes exactly
  the same decisions from the same answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from agent.documents import PlanReport
from agent.site import needs_maintenance_key, network_target
from common.reasons import Reason
from fleet.campaign.documents import PredictionDocument
from fleet.campaign.spec import NEWEST, CampaignSpec
from releases.catalog import Catalog


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a server will do when asked to upgrade to its target."""

    outcome: str  # succeeded | rejected | current
    final_release: str
    steps: tuple[str, ...]  # releases it would install, in order (SEQ-1)
    reason: str | None = None
    rule: str | None = None
    message: str | None = None

    @property
    def needs_key(self) -> bool:
        """Whether buying a maintenance key would clear the refusal."""
        return needs_maintenance_key(self.rule)

    def as_dict(self) -> PredictionDocument:
        """The JSON form."""
        return {
            "outcome": self.outcome,
            "final_release": self.final_release,
            "steps": list(self.steps),
            "reason": self.reason,
            "rule": self.rule,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, raw: PredictionDocument) -> Prediction:
        """Parse the JSON form."""
        return cls(
            str(raw["outcome"]),
            str(raw["final_release"]),
            tuple(raw.get("steps", ())),
            raw.get("reason"),
            raw.get("rule"),
            raw.get("message"),
        )


def predict(plan: PlanReport) -> Prediction:
    """Turn an agent's ``plan`` answer into a prediction."""
    steps = plan.steps
    allowed = tuple(s.release for s in steps if s.outcome != "refused")
    refused = next((s for s in steps if s.outcome == "refused"), None)
    final = plan.final_release
    if refused is not None:
        return Prediction("rejected", final, allowed, refused.reason, refused.rule, refused.message)
    if not steps:
        return Prediction("current", final, ())
    return Prediction("succeeded", final, allowed)


def held(network: str, blockers: Sequence[str], release: str) -> Prediction:
    """The prediction of a network member held back by SITE-1: it stays on ``release``."""
    return Prediction(
        "rejected",
        release,
        (),
        Reason.SITE_ALIGNMENT_BLOCKED.value,
        "SITE-1",
        f"Network {network} stays on one release: {', '.join(blockers)} cannot reach the target.",
    )


def target_for(catalog: Catalog, model: str, spec: CampaignSpec, today: date) -> str:
    """The release one server is asked for (before SITE-1)."""
    if spec.target != NEWEST:
        return spec.target
    try:
        return catalog.newest_for(model, today).version
    except KeyError:
        return spec.target


def network_of(spec: CampaignSpec) -> dict[str, str]:
    """Serial -> the network it belongs to."""
    return {serial: name for name, members in spec.networks.items() for serial in members}


def align_targets(
    catalog: Catalog,
    spec: CampaignSpec,
    models: Mapping[str, str],
    releases: Mapping[str, str],
    today: date,
) -> dict[str, str]:
    """Serial -> target: per server, then one shared target per network (SITE-1).

    Args:
        catalog: the release catalogue.
        spec: the campaign.
        models: serial -> model of every server in the campaign.
        releases: serial -> the release each server runs now.
        today: the campaign clock's date.
    """
    targets = {serial: target_for(catalog, model, spec, today) for serial, model in models.items()}
    for members in spec.networks.values():
        present = [s for s in members if s in targets]
        wanted = [targets[s] for s in present]
        if not any(catalog.get(v) is not None for v in wanted):
            continue  # no known target: each member refuses it itself (REL-1)
        shared = network_target(catalog, [releases.get(s, "") for s in present], wanted)
        for serial in present:
            targets[serial] = shared
    return targets


def apply_site_rule(
    spec: CampaignSpec, predictions: Mapping[str, Prediction], releases: Mapping[str, str]
) -> tuple[dict[str, Prediction], dict[str, list[str]]]:
    """Hold every network in which a member would not reach the shared target (SITE-1).

    Returns:
        The predictions after the rule, and per network the members needing a maintenance key.
    """
    out = dict(predictions)
    needing: dict[str, list[str]] = {}
    for name, members in sorted(spec.networks.items()):
        present = [s for s in members if s in predictions]
        blockers = [s for s in present if predictions[s].outcome == "rejected"]
        needing[name] = [s for s in present if predictions[s].needs_key]
        if not blockers:
            continue
        for serial in present:
            if predictions[serial].outcome == "succeeded":
                out[serial] = held(name, blockers, releases[serial])
    return out, needing


def assign_phases(serials: Sequence[str], spec: CampaignSpec) -> list[list[str]]:
    """Split the servers into phases: the canary, then batches; a network stays in one phase.

    Servers keep the order given (the controller sorts them); a network's members join the phase of
    its first member, so a phase may run over its size by the rest of a network.
    """
    groups = _groups(serials, spec.networks)
    sizes = _sizes(len(serials), spec)
    phases: list[list[str]] = []
    current: list[str] = []
    for group in groups:
        limit = sizes[min(len(phases), len(sizes) - 1)]
        if current and len(current) + len(group) > limit:
            phases.append(current)
            current = []
        current.extend(group)
        if len(current) >= sizes[min(len(phases), len(sizes) - 1)]:
            phases.append(current)
            current = []
    if current:
        phases.append(current)
    return phases


def _sizes(fleet: int, spec: CampaignSpec) -> list[int]:
    batch = spec.batch_size(fleet)
    return [spec.canary, batch] if spec.canary > 0 else [batch]


def _groups(serials: Iterable[str], networks: Mapping[str, Sequence[str]]) -> list[list[str]]:
    network = {s: name for name, members in networks.items() for s in members}
    wanted = set(serials)
    groups: list[list[str]] = []
    placed: set[str] = set()
    for serial in serials:
        if serial in placed:
            continue
        name = network.get(serial)
        group = [s for s in networks[name] if s in wanted] if name else [serial]
        placed.update(group)
        groups.append(group)
    return groups
