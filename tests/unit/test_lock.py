"""The server directory's lock (agent/lock.py): exclusive, refused at once, released with its holder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.lock import LOCK_FILE, ServerBusyError, ServerLock, server_lock
from common.errors import StoreError
from common.reasons import Reason


def test_a_second_holder_is_refused_server_busy_naming_the_holders_pid(tmp_path: Path) -> None:
    """While one holder has the lock, another (even in the same process) gets SERVER_BUSY with the pid."""
    with server_lock(tmp_path), pytest.raises(ServerBusyError) as refused:
        ServerLock(tmp_path).acquire()
    assert refused.value.reason is Reason.SERVER_BUSY
    assert f"process {os.getpid()}" in str(refused.value)


def test_a_released_lock_can_be_taken_again_and_its_file_stays(tmp_path: Path) -> None:
    """Releasing lets the next holder in; the lock file is never removed."""
    first = ServerLock(tmp_path)
    first.acquire()
    first.release()
    first.release()  # idempotent
    with server_lock(tmp_path) as second:
        assert second.held
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_missing_server_directory_is_a_store_error_not_busy(tmp_path: Path) -> None:
    """A folder that does not exist cannot be locked: a plain StoreError, not SERVER_BUSY."""
    with pytest.raises(StoreError) as failed:
        ServerLock(tmp_path / "nowhere").acquire()
    assert not isinstance(failed.value, ServerBusyError)
