"""Reason codes: the stable vocabulary of every refusal and failure.

Invariant: the same code appears in the CLI's JSON output, the MQTT events and the logs.
A refusal is data (a :class:`Refusal`), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Every reason code the product emits."""

    # release and sequence rules
    SEQUENTIAL_STEP_REQUIRED = "SEQUENTIAL_STEP_REQUIRED"
    MUST_INSTALL_7_1_FIRST = "MUST_INSTALL_7_1_FIRST"
    DOWNGRADE_REFUSED = "DOWNGRADE_REFUSED"
    ALREADY_INSTALLED = "ALREADY_INSTALLED"
    MODEL_UNSUPPORTED = "MODEL_UNSUPPORTED"
    NOT_YET_RELEASED = "NOT_YET_RELEASED"
    UNKNOWN_RELEASE = "UNKNOWN_RELEASE"
    # maintenance and keys
    MAINTENANCE_KEY_REQUIRED = "MAINTENANCE_KEY_REQUIRED"
    MAINTENANCE_KEY_EXPIRED = "MAINTENANCE_KEY_EXPIRED"
    KEY_EXPIRED = "KEY_EXPIRED"
    KEY_NOT_YET_VALID = "KEY_NOT_YET_VALID"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_SERIAL_MISMATCH = "KEY_SERIAL_MISMATCH"
    KEY_SIGNATURE_INVALID = "KEY_SIGNATURE_INVALID"
    KEY_FORMAT_INVALID = "KEY_FORMAT_INVALID"
    KEY_SIGNER_UNTRUSTED = "KEY_SIGNER_UNTRUSTED"
    TEMPORARY_KEY_CEILING = "TEMPORARY_KEY_CEILING"
    REVOCATION_LIST_STALE = "REVOCATION_LIST_STALE"
    # images
    IMAGE_DIGEST_MISMATCH = "IMAGE_DIGEST_MISMATCH"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_TRUNCATED = "IMAGE_TRUNCATED"
    IMAGE_UNAVAILABLE = "IMAGE_UNAVAILABLE"
    IMAGE_TOO_SLOW = (
        "IMAGE_TOO_SLOW"  # the source trickled: below the least rate; the partial download is kept
    )
    IMAGE_WRONG_TARGET = "IMAGE_WRONG_TARGET"  # the signed target is another build's, or not for this model
    # the release repository's TUF metadata (agent/releasetrust.py)
    RELEASE_METADATA_UNSIGNED = "RELEASE_METADATA_UNSIGNED"  # signed by no key the role names
    RELEASE_METADATA_THRESHOLD = "RELEASE_METADATA_THRESHOLD"  # signed by some of the role's keys, too few
    RELEASE_ROOT_UNSIGNED = "RELEASE_ROOT_UNSIGNED"  # a new root not signed by a threshold of the old and new
    RELEASE_METADATA_ROLLBACK = "RELEASE_METADATA_ROLLBACK"  # older than a version already trusted
    RELEASE_METADATA_EXPIRED = "RELEASE_METADATA_EXPIRED"  # a frozen repository: metadata past its expiry
    RELEASE_METADATA_MISMATCH = "RELEASE_METADATA_MISMATCH"  # not the length or hash the role above signed
    RELEASE_METADATA_TOO_LARGE = "RELEASE_METADATA_TOO_LARGE"  # a metadata file longer than its limit
    RELEASE_METADATA_INVALID = "RELEASE_METADATA_INVALID"  # malformed metadata or release facts
    RELEASE_METADATA_UNAVAILABLE = "RELEASE_METADATA_UNAVAILABLE"  # the repository could not be reached
    RELEASE_TARGET_UNKNOWN = "RELEASE_TARGET_UNKNOWN"  # the repository signs no image of that build
    # execution
    DATABASE_VERIFY_FAILED = "DATABASE_VERIFY_FAILED"
    BOOT_CHECK_FAILED = "BOOT_CHECK_FAILED"
    CRASH_LOOP = "CRASH_LOOP"
    JOURNAL_UNREADABLE = "JOURNAL_UNREADABLE"  # the persisted upgrade state was torn or alien: rolled back
    NO_SPACE = "NO_SPACE"
    CANCELLED = "CANCELLED"
    UPGRADE_IN_PROGRESS = "UPGRADE_IN_PROGRESS"
    SERVER_BUSY = "SERVER_BUSY"  # another process holds the server directory's lock (agent/lock.py)
    STATE_INVALID = "STATE_INVALID"  # a persisted file holds a value out of range: nothing is written
    BAD_INPUT = "BAD_INPUT"
    CONFIG_INVALID = "CONFIG_INVALID"  # the agent's configuration file is unusable
    # vendor desk
    BUNDLE_WINDOW_CLOSED = "BUNDLE_WINDOW_CLOSED"
    TRADE_NOT_ELIGIBLE = "TRADE_NOT_ELIGIBLE"
    SERVER_NOT_FUNCTIONAL = "SERVER_NOT_FUNCTIONAL"
    MIGRATE_REQUIRES_8_0 = "MIGRATE_REQUIRES_8_0"
    # operator commands over MQTT (agent/mqtt/commands.py) and the broker link
    COMMAND_UNSIGNED = "COMMAND_UNSIGNED"
    COMMAND_SIGNATURE_INVALID = "COMMAND_SIGNATURE_INVALID"
    COMMAND_SIGNER_UNTRUSTED = "COMMAND_SIGNER_UNTRUSTED"
    COMMAND_EXPIRED = "COMMAND_EXPIRED"
    COMMAND_REPLAYED = "COMMAND_REPLAYED"
    COMMAND_MALFORMED = "COMMAND_MALFORMED"
    COMMAND_UNKNOWN = "COMMAND_UNKNOWN"
    COMMAND_TOO_LARGE = "COMMAND_TOO_LARGE"
    COMMAND_WRONG_TARGET = "COMMAND_WRONG_TARGET"
    NO_UPGRADE_RUNNING = "NO_UPGRADE_RUNNING"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
    # fleet campaigns (fleet/campaign)
    SITE_ALIGNMENT_BLOCKED = "SITE_ALIGNMENT_BLOCKED"
    CAMPAIGN_CANCELLED = "CAMPAIGN_CANCELLED"
    WINDOW_CLOSED = "WINDOW_CLOSED"
    SERVER_OFFLINE = "SERVER_OFFLINE"
    # the simulator's own folders
    FLEET_IN_USE = "FLEET_IN_USE"  # another live run hosts this fleet folder


# Every rule a refusal or failure may cite, as docs/rules.md states them (a test compares the two).
# The domain rules: the vendor's licence, upgrade, trade and Migrate rules.
DOMAIN_RULES = (
    "SEQ-1", "SEQ-2", "DB-1", "DB-2", "SWM-1", "SWM-2", "SWM-3", "SWM-4", "SWM-5", "SWM-6", "SWM-7",
    "PHONE-1", "DOWN-1", "REL-1", "TRADE-1", "TRADE-2", "TRADE-3", "TRADE-4", "XFER-1", "XFER-2", "XFER-3",
    "SITE-1", "MIG-1", "MIG-2",
)  # fmt: skip
# The rules this product adds where the vendor's documents are silent.
PRODUCT_RULES = ("IMG-1", "SAFE-1", "CMD-1", "CMD-2", "CMD-3", "CMD-4", "CMD-5", "CAMPAIGN")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A policy decision not to do something: a reason code, the rule ID and one plain sentence."""

    reason: Reason
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the JSON form used by the CLI, MQTT events and logs."""
        return {"reason": self.reason.value, "rule": self.rule, "message": self.message}
