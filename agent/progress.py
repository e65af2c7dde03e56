"""The terminal progress display of ``upgrade`` and ``install`` (rich), fed by the upgrader's events."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agent import events
from agent.events import AgentEvent


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

    def on_event(self, event: AgentEvent) -> None:
        """Show one upgrader event."""
        if not self.enabled:
            return
        match event:
            case events.Progress(build=build, phase=phase, percent=percent):
                key = (build, phase)
                if key not in self._tasks:
                    self._tasks[key] = self._progress.add_task(f"{build} {phase}", total=100.0)
                self._progress.update(self._tasks[key], completed=percent)
            case events.Transition(step=step, steps=steps, build=build, state=state):
                self._progress.console.log(f"step {step}/{steps} {build}: {state}")
            case events.Refused(build=build, reason=reason, rule=rule):
                self._progress.console.log(f"{build} refused: {reason} ({rule})")
