"""Exceptions, split by origin.

- :class:`VerificationError` and children: untrusted data is bad. Never retried.
- :class:`TransportError`: the network or the broker misbehaved. Retryable.
- :class:`CatalogError`: the release catalogue or a manifest is broken (names file, entry, problem).
- :class:`DatabaseError`: the database engine failed or a verification after rebuild did not match.
- Misuse (a call out of order) is a plain ``RuntimeError``.

Each carries a :class:`~common.reasons.Reason` so the CLI can print a reason code, never a traceback.
"""

from __future__ import annotations

from common.reasons import Reason


class AllworxError(Exception):
    """Base class of every error the product raises on purpose."""

    reason: Reason = Reason.BAD_INPUT

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The one-line human message."""
        return str(self)


class VerificationError(AllworxError):
    """Untrusted data failed a check: a key, a signature, an image, a command."""


class KeyFormatError(VerificationError):
    """A key file could not be parsed."""

    reason = Reason.KEY_FORMAT_INVALID


class SignatureError(VerificationError):
    """A signature did not verify against the trusted keys."""

    reason = Reason.KEY_SIGNATURE_INVALID


class StaleRevocationError(VerificationError):
    """A revocation list is not newer than the one installed (an older list never replaces a newer)."""

    reason = Reason.REVOCATION_LIST_STALE


class KeyIssueError(AllworxError):
    """The vendor was asked to issue a key that makes no sense (unknown plan, missing ceiling, ...)."""

    reason = Reason.BAD_INPUT


class DigestError(VerificationError):
    """Downloaded bytes do not match their signed size or digest."""

    reason = Reason.IMAGE_DIGEST_MISMATCH


class CatalogError(AllworxError):
    """The release catalogue, model table or a manifest is malformed."""

    reason = Reason.BAD_INPUT

    def __init__(self, file: str, entry: str, problem: str) -> None:
        super().__init__(f"{file}: {entry}: {problem}")
        self.file = file
        self.entry = entry
        self.problem = problem


class DatabaseError(AllworxError):
    """A database operation or its verification failed."""

    reason = Reason.DATABASE_VERIFY_FAILED


class StoreError(AllworxError):
    """A server directory is missing, malformed or out of space."""

    reason = Reason.BAD_INPUT


class TransportError(AllworxError):
    """A retryable transport problem (download interrupted, broker gone)."""

    reason = Reason.IMAGE_UNAVAILABLE


class CancelledUpgrade(AllworxError):  # noqa: N818  # reason: a requested stop, not an error
    """The operator (or the agent's shutdown) asked the upgrade to stop; partial work is kept."""

    reason = Reason.CANCELLED


class CommandError(VerificationError):
    """An operator command was refused: unsigned, forged, untrusted, stale, replayed or malformed."""

    reason = Reason.COMMAND_MALFORMED


class BrokerError(TransportError):
    """The MQTT broker is unreachable, refused the connection or dropped it (retryable)."""

    reason = Reason.BROKER_UNAVAILABLE

    def __init__(self, message: str, *, protocol_refused: bool = False) -> None:
        super().__init__(message)
        self.protocol_refused = protocol_refused  # the broker does not speak the protocol asked for
