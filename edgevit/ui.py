"""Terminal output: one rich console on stderr (stdout stays clean for --json), timed steps, bars."""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)
T = TypeVar("T")


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A spinner while a long step runs, then a ✓ line with its duration."""
    start = time.perf_counter()
    with console.status(f"{description}…"):
        yield
    console.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - start:.1f}s)[/dim]")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A progress bar over `items` (shown on stderr, transient)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total if total is not None else len(items))  # type: ignore[arg-type]
        for item in items:
            yield item
            progress.advance(task)
