"""The projector's progress bar on stderr (rich), shown only when asked for."""

from __future__ import annotations

__all__ = ["ProjectionProgress", "projection_progress"]


class ProjectionProgress:
    """A rich progress bar on stderr (only when asked for)."""

    def __init__(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("projecting", total=total)
        self._bar.start()

    def update(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def close(self) -> None:
        self._bar.stop()


def projection_progress(enabled: bool, log, until_offset: int | None,
                        start: int) -> ProjectionProgress | None:
    """A bar over the events from ``start`` to ``until_offset`` (the log's end), or None."""
    if not enabled:
        return None
    end = until_offset if until_offset is not None else getattr(log, "next_offset", None)
    return ProjectionProgress(None if end is None else max(end - start, 0))
