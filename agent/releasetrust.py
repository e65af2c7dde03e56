"""Trusting a release: the agent's one boundary with python-tuf (``tuf.ngclient``).

The release repository is a TUF repository (docs/releases.md) at a location that is a local folder
(virtual servers) or an ``http(s)://`` URL (lab boxes). For every image the agent asks for,
:func:`release_target` refreshes the top-level metadata (root, then timestamp, snapshot, targets:
signatures and thresholds, versions never going back, expiry, lengths and hashes) and returns the
verified target as a :class:`~agent.manifest.Manifest`; the image itself is downloaded by
:mod:`agent.fetcher` against the verified length and SHA-256.

Invariants:

- The root the server was created with is pinned in ``trust/release-root.json`` and is where every
  refresh starts; the metadata trusted so far lives in ``trust/tuf/`` (the client's state that makes
  rollback and freeze attacks visible), written only by python-tuf, atomically.
- Every TUF exception becomes one of the product's errors here, with a reason code of its own
  (:data:`REASONS`); nothing else in the product imports ``tuf``.
- Metadata is verified on every call: nothing is remembered in this module.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig, Urllib3Fetcher

from agent.manifest import Manifest, manifest_from_target
from common.errors import AllworxError, StoreError, TransportError, VerificationError
from common.reasons import Reason

PINNED_ROOT = "release-root.json"  # in the server's trust/ folder
METADATA_DIR = "tuf"  # in the server's trust/ folder
HTTP_TIMEOUT = 30  # seconds without a byte before a metadata download is given up
CHUNK = 64 * 1024  # bytes per read of a local metadata file

REASONS: dict[type[Exception], Reason] = {  # the most specific first
    exceptions.UnsignedMetadataError: Reason.RELEASE_METADATA_UNSIGNED,
    exceptions.BadVersionNumberError: Reason.RELEASE_METADATA_ROLLBACK,
    exceptions.ExpiredMetadataError: Reason.RELEASE_METADATA_EXPIRED,
    exceptions.LengthOrHashMismatchError: Reason.RELEASE_METADATA_MISMATCH,
    exceptions.DownloadLengthMismatchError: Reason.RELEASE_METADATA_TOO_LARGE,
    exceptions.RepositoryError: Reason.RELEASE_METADATA_INVALID,
}


def is_remote(repo: str) -> bool:
    """Whether the repository location is an HTTP(S) URL (else a local folder)."""
    return repo.startswith(("http://", "https://"))


def base_url(repo: str) -> str:
    """The repository's URL with a trailing slash: the URL itself, or a folder's ``file:`` URL."""
    url = repo if is_remote(repo) else Path(repo).absolute().as_uri()
    return url.rstrip("/") + "/"


def image_location(repo: str, build: str) -> str:
    """Where ``build``'s image is downloaded from: its URL, or its path in a local repository."""
    if is_remote(repo):
        return f"{base_url(repo)}targets/{target_path(build)}"
    return str(Path(repo) / "targets" / target_path(build))


def target_path(build: str) -> str:
    """The TUF target path of ``build``'s image."""
    return f"images/{build}.img"


class LocalFetcher(FetcherInterface):
    """python-tuf's fetcher for ``file:`` URLs: a virtual server's repository is a local folder."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        """Yield the file's bytes.

        Raises:
            DownloadHTTPError: (404) no such file, as a web server would answer.
            OSError: the file cannot be read.
        """
        path = Path(unquote(urlparse(url).path))
        if not path.is_file():
            raise exceptions.DownloadHTTPError(f"{path} not found", 404)
        return self._chunks(path)

    @staticmethod
    def _chunks(path: Path) -> Iterator[bytes]:
        """The file's chunks, opened again for each so that nothing stays open when python-tuf stops
        reading (a file longer than its limit)."""
        offset = 0
        while True:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(CHUNK)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk


def fetcher_for(repo: str) -> FetcherInterface:
    """The fetcher for the repository's location: HTTP(S) with a bounded wait, or local files."""
    return Urllib3Fetcher(socket_timeout=HTTP_TIMEOUT) if is_remote(repo) else LocalFetcher()


_SIGNED_BY = re.compile(r"(\w+) was signed by (\d+)/(\d+) keys")


def _reason(exc: Exception) -> Reason:
    if isinstance(exc, exceptions.UnsignedMetadataError):
        signed = _SIGNED_BY.match(str(exc))  # python-tuf names the role and counts the valid signatures
        if signed is not None and signed.group(1) == "root":
            return Reason.RELEASE_ROOT_UNSIGNED
        if signed is not None and int(signed.group(2)) > 0:
            return Reason.RELEASE_METADATA_THRESHOLD
    for kind, reason in REASONS.items():
        if isinstance(exc, kind):
            return reason
    return Reason.RELEASE_METADATA_INVALID


@contextlib.contextmanager
def translated(repo: str) -> Iterator[None]:
    """Turn python-tuf's exceptions into the product's, each with its reason code.

    Raises:
        VerificationError: the metadata failed a check (its own reason code); never retried.
        TransportError: (``RELEASE_METADATA_UNAVAILABLE``) the repository could not be reached.
        StoreError: the trusted metadata could not be read or written in ``trust/``.
    """
    try:
        yield
    except AllworxError:
        raise
    except exceptions.DownloadLengthMismatchError as exc:
        raise VerificationError(f"{repo}: {exc}", reason=Reason.RELEASE_METADATA_TOO_LARGE) from exc
    except exceptions.DownloadError as exc:
        raise TransportError(
            f"{repo}: the release metadata cannot be downloaded: {exc or type(exc).__name__}",
            reason=Reason.RELEASE_METADATA_UNAVAILABLE,
        ) from exc
    except (exceptions.RepositoryError, ValueError) as exc:
        reason = _reason(exc)
        raise VerificationError(f"{repo}: the release metadata is refused: {exc}", reason=reason) from exc
    except OSError as exc:
        raise StoreError(f"the trusted release metadata cannot be kept: {exc}") from exc


def release_target(
    trust_dir: Path, repo: str, build: str, *, fetcher: FetcherInterface | None = None
) -> Manifest:
    """Refresh the repository's metadata from the root pinned in ``trust_dir`` and return ``build``'s image.

    Raises:
        VerificationError: the metadata failed a check (``RELEASE_METADATA_*``), the repository
            signs no image of ``build`` (``RELEASE_TARGET_UNKNOWN``), or the signed target holds
            another build (``IMAGE_WRONG_TARGET``).
        TransportError: (``RELEASE_METADATA_UNAVAILABLE``) the repository could not be reached.
        StoreError: the pinned root is missing, or ``trust/tuf`` cannot be written.
    """
    try:
        pinned = (trust_dir / PINNED_ROOT).read_bytes()
    except OSError as exc:
        raise StoreError(f"{trust_dir / PINNED_ROOT}: no pinned release root: {exc.strerror}") from exc
    path = target_path(build)
    with translated(repo):
        (trust_dir / METADATA_DIR).mkdir(exist_ok=True)
        updater = Updater(
            metadata_dir=str(trust_dir / METADATA_DIR),
            metadata_base_url=base_url(repo) + "metadata/",
            target_base_url=base_url(repo) + "targets/",
            fetcher=fetcher if fetcher is not None else fetcher_for(repo),
            config=UpdaterConfig(),
            bootstrap=pinned,
        )
        updater.refresh()
        info = updater.get_targetinfo(path)
    if info is None:
        raise VerificationError(
            f"{repo} signs no image of build {build}", reason=Reason.RELEASE_TARGET_UNKNOWN
        )
    manifest = manifest_from_target(path, info.length, info.hashes, info.unrecognized_fields)
    if manifest.build != build:
        raise VerificationError(
            f"the target {path} is signed as build {manifest.build}", reason=Reason.IMAGE_WRONG_TARGET
        )
    return manifest


def pin_root(trust_dir: Path, root: bytes) -> None:
    """Pin the release repository's root in a new server's ``trust_dir`` (at server creation).

    Raises:
        VerificationError: (``RELEASE_METADATA_INVALID``) ``root`` is not TUF root metadata
            signed by its own keys.
        StoreError: the file cannot be written.
    """
    from tuf.api.metadata import Metadata, Root

    with translated("the release root"):
        metadata = Metadata[Root].from_bytes(root)
        metadata.signed.verify_delegate(Root.type, metadata.signed_bytes, metadata.signatures)
    try:
        (trust_dir / PINNED_ROOT).write_bytes(root)
    except OSError as exc:
        raise StoreError(f"{trust_dir / PINNED_ROOT}: cannot pin the release root: {exc.strerror}") from exc
