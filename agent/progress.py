"""The terminal progress display of ``upgrade`` and ``install`` (rich), fed by the upgrader's events."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class ProgressView:
    """One bar per step (download, then database work), plus a line per transition."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True, log_path=False),
            transient=False,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self._progress.stop()

    def on_event(self, event: dict[str, Any]) -> None:
        """Show one upgrader event."""
        if not self.enabled:
            return
        kind = event.get("type")
        if kind == "progress":
            key = (str(event["build"]), str(event["phase"]))
            if key not in self._tasks:
                label = f"{event['build']} {'download' if event['phase'] == 'download' else 'database'}"
                self._tasks[key] = self._progress.add_task(label, total=100.0)
            self._progress.update(self._tasks[key], completed=float(event["percent"]))
        elif kind == "transition":
            self._progress.console.log(
                f"step {event['step']}/{event['steps']} {event['build']}: {event['state']}"
            )
        elif kind == "refused":
            self._progress.console.log(f"{event['build']} refused: {event['reason']} ({event['rule']})")
