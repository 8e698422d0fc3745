"""Progress bars for long loops (rich, on stderr so stdout stays clean for records)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def timed(log: Any, what: str) -> Iterator[None]:
    """Log `what: N s` at INFO when the block ends (the phases of a stage, so a log shows where
    its minutes went)."""
    start = time.perf_counter()
    yield
    log.info("%s: %.1f s", what, time.perf_counter() - start)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield `update(advance, **figures)`; figures are shown beside the bar (loss, tokens/s, ...).

    On a terminal: a rich bar. Otherwise (a log file, CI): a plain line every
    INSTRUCTRL_PROGRESS_EVERY seconds (default 10) and one at the end, so a log shows how far a
    long stage is. INSTRUCTRL_PROGRESS=0 turns both off."""
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
    enabled = os.environ.get("INSTRUCTRL_PROGRESS", "1") != "0"
    plain = enabled and not console.is_terminal
    every_s = float(os.environ.get("INSTRUCTRL_PROGRESS_EVERY", "10"))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[figures]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled or plain,
    ) as progress:
        task = progress.add_task(description, total=total, figures="")
        state = {"done": 0, "shown": "", "start": time.monotonic(), "last": time.monotonic()}
        # another process may watch this loop (the web app's generation jobs)
        progress_file = os.environ.get("INSTRUCTRL_PROGRESS_FILE")

        def update(advance: int = 1, **figures: Any) -> None:
            state["done"] += advance
            state["shown"] = " ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
            )
            progress.update(task, advance=advance, figures=state["shown"])
            now = time.monotonic()
            if plain and advance and now - state["last"] >= every_s:
                state["last"], state["printed"] = now, state["done"]
                _plain_line(description, state, total)
            if progress_file:
                _write_progress(progress_file, description, state["done"], total)

        yield update
        if plain and state["done"] and state.get("printed") != state["done"]:
            _plain_line(description, state, total)


def _plain_line(description: str, state: dict[str, Any], total: int) -> None:
    """`generate: 96/640 (15 %) tokens_per_s 81.2, 42 s, eta 238 s` on stderr."""
    done, elapsed = state["done"], time.monotonic() - state["start"]
    eta = elapsed / done * (total - done) if done and total >= done else 0.0
    figures = f" {state['shown']}," if state["shown"] else ""
    print(
        f"{description}: {done}/{total} ({100 * done / max(total, 1):.0f} %){figures} "
        f"{elapsed:.0f} s, eta {eta:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def _write_progress(path: str, description: str, done: int, total: int) -> None:
    """{"description", "done", "total"} as JSON, replaced atomically so a reader never sees half."""
    import json

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"description": description, "done": done, "total": total}, f)
    os.replace(tmp, path)
