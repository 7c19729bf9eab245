"""What the person running the load sees: a progress bar per file, the steps, the summary table."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from atelier_etl.summary import LoadSummary


class LoadProgress(Protocol):
    """What `load()` reports as it goes; None there means nothing is shown."""

    def start_file(self, file: str, size: int) -> None: ...

    def advance_file(self, file: str, position: int) -> None: ...

    def finish_file(self, file: str) -> None: ...

    def step(self, message: str) -> None: ...


class RichProgress:
    """Bytes read of each file's size as a bar; other steps as log lines above the bars."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def start_file(self, file: str, size: int) -> None:
        self._tasks[file] = self._progress.add_task(file, total=size)

    def advance_file(self, file: str, position: int) -> None:
        self._progress.update(self._tasks[file], completed=position)

    def finish_file(self, file: str) -> None:
        task = self._tasks[file]
        self._progress.update(task, completed=self._progress.tasks[task].total)

    def step(self, message: str) -> None:
        self._progress.console.log(message)


class PlainProgress:
    """Step lines only, for logs (no terminal to draw bars on)."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def start_file(self, file: str, size: int) -> None:
        self._console.log(f"{file}: reading {size:,} bytes")

    def advance_file(self, file: str, position: int) -> None:
        pass

    def finish_file(self, file: str) -> None:
        self._console.log(f"{file}: read")

    def step(self, message: str) -> None:
        self._console.log(message)


def summary_table(summary: LoadSummary) -> Table:
    table = Table(title=f"Atelier load ({summary.seconds:.1f} s)")
    table.add_column("file")
    for column in ("read", "loaded", "rejected"):
        table.add_column(column, justify="right")
    for row in summary.files:
        table.add_row(row.file, f"{row.read:,}", f"{row.loaded:,}", f"{row.rejected:,}")
    table.add_section()
    table.add_row("total", f"{summary.read:,}", f"{summary.loaded:,}", f"{summary.rejected:,}", style="bold")
    return table


def print_summary(console: Console, summary: LoadSummary) -> None:
    console.print(summary_table(summary))
    if summary.rejected:
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in summary.rejected_by_kind.items())
        console.print(f"{summary.rejected:,} rejected rows: {kinds}", highlight=False)
    else:
        console.print("no rejected rows", highlight=False)
    console.print(f"rejects report: {summary.rejects_path}", soft_wrap=True, highlight=False)
