"""Progress bars for long loops (rich, on stderr so stdout stays clean for records)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield `update(advance, **figures)`; figures are shown beside the bar (loss, tokens/s, ...)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    disable = os.environ.get("INSTRUCTRL_PROGRESS", "1") == "0"
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[figures]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    ) as progress:
        task = progress.add_task(description, total=total, figures="")
        done = 0
        # another process may watch this loop (the web app's generation jobs)
        progress_file = os.environ.get("INSTRUCTRL_PROGRESS_FILE")

        def update(advance: int = 1, **figures: Any) -> None:
            nonlocal done
            done += advance
            shown = " ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
            )
            progress.update(task, advance=advance, figures=shown)
            if progress_file:
                _write_progress(progress_file, description, done, total)

        yield update


def _write_progress(path: str, description: str, done: int, total: int) -> None:
    """{"description", "done", "total"} as JSON, replaced atomically so a reader never sees half."""
    import json

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"description": description, "done": done, "total": total}, f)
    os.replace(tmp, path)
