"""The lab's terminal output, with rich: progress on stderr, result tables on stdout.

On a terminal a progress bar is redrawn in place; anywhere else (a pipe, a CI log) its line is
printed every few seconds and once at the end, so a log stays readable and short.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import Progress, ProgressColumn
from rich.table import Table

#: Values are printed as they are: no markup, no highlighting of numbers.
STDERR = Console(stderr=True, markup=False, highlight=False)
STDOUT = Console(markup=False, highlight=False)


class LiveProgress:
    """One task of a rich Progress on stderr; ``update`` it with the figures so far."""

    def __init__(
        self, *columns: str | ProgressColumn, total: float | None, every: float, **fields: Any
    ) -> None:
        self._progress = Progress(*columns, console=STDERR)
        self._task = self._progress.add_task(fields.pop("description", ""), total=total, **fields)
        self._every = every
        self._printed = time.monotonic()

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()  # elsewhere than on a terminal, this prints the last line

    def update(self, completed: float, **fields: Any) -> None:
        self._progress.update(self._task, completed=completed, **fields)
        now = time.monotonic()
        if not STDERR.is_terminal and now - self._printed >= self._every:
            self._printed = now
            STDERR.print(self._progress.make_tasks_table(self._progress.tasks))


def key_value_table(rows: Iterable[tuple[str, str]]) -> Table:
    """A two-column table of names and values, without a header."""
    table = Table(show_header=False, box=box.SQUARE)
    table.add_column(no_wrap=True)
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return table
