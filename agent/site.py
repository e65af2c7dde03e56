"""Multi-site networks (rule SITE-1), pure: the one release a network aligns on, and who needs a key.

In a multi-site network every server must run the same release as the newest member (typically a
new Connect server just traded in); members without maintenance keys are reported as needing one.
The vendor's site check (``allworx-sim site check``) and campaigns (``allworx-fleet campaign``)
both take the network's target and the "needs a key" verdict from here.

Invariants:
- the target is never older than the newest release a member runs: aligning on anything lower
  would ask that member to go back, which DOWN-1 refuses, so the network could never align;
- a campaign's own targets only move the network further: to the oldest release any member is
  asked for, when that is newer than the newest member's release (so no member is asked past a
  release another member is asked for);
- a member "needs a maintenance key" only when the refusal in its way is one a key purchase
  clears (SWM-1, SWM-2, MIG-2), never a model limit or a downgrade.
"""

from __future__ import annotations

from collections.abc import Iterable

from releases.catalog import Catalog, Release

KEY_RULES = frozenset({"SWM-1", "SWM-2", "MIG-2"})  # refusals a maintenance key purchase resolves


def needs_maintenance_key(rule: str | None) -> bool:
    """Whether a refusal citing ``rule`` goes away once a maintenance key is bought."""
    return rule in KEY_RULES


def network_target(catalog: Catalog, running: Iterable[str], wanted: Iterable[str] = ()) -> str:
    """The release every member of a network must reach (rule SITE-1).

    Args:
        catalog: the release catalogue.
        running: the release each member runs now (versions not in the catalogue are skipped).
        wanted: the releases a campaign asks of the members, if any (unknown ones are skipped).

    Returns:
        The newest release a member runs, or the oldest release of ``wanted`` when that is newer.

    Raises:
        ValueError: no release of ``running`` or ``wanted`` is in the catalogue.
    """
    newest_member = _known(catalog, running)
    asked = _known(catalog, wanted)
    floor = max(newest_member, key=_order, default=None)
    goal = min(asked, key=_order, default=None)
    candidates = [r for r in (floor, goal) if r is not None]
    if not candidates:
        raise ValueError("no member runs, and no one is asked for, a release of the catalogue")
    return max(candidates, key=_order).version


def _known(catalog: Catalog, versions: Iterable[str]) -> list[Release]:
    return [release for v in versions if (release := catalog.get(v)) is not None]


def _order(release: Release) -> int:
    return release.index
