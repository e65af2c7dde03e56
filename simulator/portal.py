"""Damage to the vendor's download portal, for tests and scenarios: a private copy, then one fault.

A real partner downloads release images from the vendor's portal; a scenario or a test that wants
a bad download (a flipped byte on the wire, a cut-short or padded file, release metadata altered
after signing) damages its own copy of the release repository, never the shared one other runs read.

Invariant: :func:`damage` changes exactly one file of the copy, in the way its name says; the
agent must refuse the result (rule IMG-1) with the reason in :data:`EXPECTED`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal, get_args

from common.errors import StoreError
from common.reasons import Reason
from simulator.publish import image_path, metadata_path, target_name

Damage = Literal["byte", "truncate", "extend", "metadata"]
DAMAGES: tuple[str, ...] = get_args(Damage)
EXPECTED: dict[str, Reason] = {  # what the agent must answer to each damage
    "byte": Reason.IMAGE_DIGEST_MISMATCH,
    "truncate": Reason.IMAGE_TRUNCATED,
    "extend": Reason.IMAGE_TOO_LARGE,
    "metadata": Reason.RELEASE_METADATA_MISMATCH,
}


def private_copy(shared: Path, dest: Path) -> Path:
    """Copy the release repository ``shared`` to ``dest`` (once) and return ``dest``.

    Raises:
        StoreError: the copy cannot be made.
    """
    if not dest.is_dir():
        try:
            shutil.copytree(shared, dest)
        except OSError as exc:
            raise StoreError(f"cannot copy the release repository to {dest}: {exc}") from exc
    return dest


def damage(repo: Path, build: str, how: Damage) -> Path:
    """Damage ``build`` in ``repo`` as ``how`` says; return the file changed.

    - ``byte``: one byte in the middle of the image flipped (same size).
    - ``truncate``: the image's last 100 bytes cut off.
    - ``extend``: one byte appended to the image.
    - ``metadata``: a signed fact of the build's target changed after signing (its schema number in
      ``targets.json``), which no longer matches the hash the snapshot signed.

    Raises:
        StoreError: the file is missing or cannot be rewritten.
    """
    path = metadata_path(repo, "targets") if how == "metadata" else image_path(repo, build)
    try:
        data = path.read_bytes()
        if how == "byte":
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x01
            data = bytes(flipped)
        elif how == "truncate":
            data = data[:-100]
        elif how == "extend":
            data += b"\0"
        else:
            document = json.loads(data)
            document["signed"]["targets"][target_name(build)]["custom"]["db_schema"] += 1
            data = json.dumps(document, indent=1, separators=(",", ": "), sort_keys=True).encode()
        path.write_bytes(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"cannot damage {path}: {exc}") from exc
    return path
