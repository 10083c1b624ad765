"""The progress bar of a followed job on stderr: phase, bytes, rate and ETA (rich)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from client.humanize import RateMeter, progress_text


class JobProgress:
    """A rich progress bar when `enabled` (a terminal), else nothing."""

    def __init__(self, job_id: str, *, enabled: bool) -> None:
        self.job_id = job_id
        self.rates = RateMeter()
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.fields[job]}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[text]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> JobProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("", total=100, job=self.job_id, text="sent")
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, job: dict[str, Any], at_s: float) -> None:
        done, total = int(job.get("bytes_done") or 0), int(job.get("bytes_total") or 0)
        rate = self.rates.add(at_s, done)
        if self._progress is None:
            return
        phase = str(job.get("phase") or job.get("state") or "")
        self._progress.update(
            self._task,
            completed=float(job.get("progress_pct") or 0),
            text=progress_text(phase, done, total, rate),
        )
