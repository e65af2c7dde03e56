"""Fixed key material and instants the fuzz targets sign their seeds with (no randomness, no files)."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from agent import crypto
from agent.crypto import Certificate


def scratch_folder(name: str) -> Path:
    """A new folder of this fuzzing process (``allworx-fuzz-<name>-...``), removed at its exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"allworx-fuzz-{name}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def private_key(name: str) -> bytes:
    """A fixed Ed25519 private key derived from ``name``."""
    return hashlib.sha256(f"allworx-fuzz-{name}".encode()).digest()


ROOT = private_key("vendor-root")
ROOT_PUBLIC = crypto.public_key(ROOT)
SIGNER = private_key("vendor-signer")
OPERATOR = private_key("operator")
OPERATOR_PUBLIC = crypto.public_key(OPERATOR)
TRUSTED = {crypto.fingerprint(OPERATOR_PUBLIC): OPERATOR_PUBLIC}
SERIAL = "AWX00A1B2"
SITE = "hq"
TODAY = date(2015, 6, 1)
NOW = datetime(2015, 6, 1, 12, 0, tzinfo=UTC)


def certificate(purposes: tuple[str, ...] = ("keys", "revocations")) -> Certificate:
    """The vendor signer's certificate, chaining to :data:`ROOT`."""
    return crypto.issue_certificate(
        ROOT,
        signer_id="vendor-fuzz",
        public=crypto.public_key(SIGNER),
        purposes=purposes,
        not_before=date(2008, 1, 1),
        not_after=date(2040, 1, 1),
    )


# Values that trip parsers of text: digits str.isdigit takes and int() does not, a NUL as TOML
# and JSON escape it, numbers at and past their limits, dates at the calendar's ends, a BOM.
TRICKY = ("²", "١٢", "\\u0000", "nan", "inf", "-0", "1e999", "9" * 20, "9999-12-31", "0001-01-01",
          "T23:59:59-23:59", "\ufeff", "\r\n")  # fmt: skip


def field_names(*models: Any) -> list[str]:
    """The keys of pydantic models as a file writes them (a field's alias, else its name)."""
    return sorted({f.alias or name for model in models for name, f in model.model_fields.items()})
