"""The vendor desk's exceptions, split by origin.

A refusal by the vendor (a pair not in the schedules, the bundle window closed, Migrate below
8.0) is data, a :class:`~common.reasons.Refusal`; the desk's world-changing calls (order,
purchase, migrate) raise it wrapped in :class:`VendorRefusedError` so a caller cannot mistake a
refused order for a placed one. Inspections (quotes, site checks) return refusals as data.
"""

from __future__ import annotations

from common.errors import AllworxError
from common.reasons import Reason, Refusal


class VendorRefusedError(AllworxError):
    """The vendor refused the request; ``refusal`` carries the reason code, rule and sentence."""

    reason = Reason.BAD_INPUT

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message, reason=refusal.reason)
        self.refusal = refusal

    @property
    def rule(self) -> str:
        """The rule ID the refusal cites."""
        return self.refusal.rule


class DeskError(AllworxError):
    """A desk request that cannot be carried out as asked (unknown order, server returned twice)."""

    reason = Reason.BAD_INPUT
