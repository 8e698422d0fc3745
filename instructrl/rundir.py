"""Run-directory I/O shared by the training stages: metrics.jsonl, atomic checkpoints, model
directories installed into place.

Checkpoints and models are written into a temp dir and renamed into place, so a kill mid-save
leaves the previous one intact. No torch at import (the report reads metrics through here).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"


class MetricsLog:
    """Appends one JSON row per call to out/metrics.jsonl (flushed, so a crash loses nothing).
    Under several processes only the main one writes (`enabled=accelerator.is_main_process`)."""

    def __init__(self, path: Path, *, truncate_after_step: int | None = None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if (
            truncate_after_step is not None and path.exists()
        ):  # resume: drop rows past the checkpoint
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r.get("step", 0) <= truncate_after_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif truncate_after_step is None:
            path.write_text("")

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
                )
                + "\n"
            )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Checkpointer:
    """out/checkpoints/step-N: accelerate state (model, optimizer, scheduler, RNG) + trainer state."""

    def __init__(self, out: Path, keep_last: int):
        self.root = out / "checkpoints"
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        done = (
            [p for p in self.root.glob("step-*") if (p / STATE_FILE).is_file()]
            if self.root.exists()
            else []
        )
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def save(self, accelerator: Any, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{state['step']}"
        tmp = self.root / f".tmp-step-{state['step']}"
        if accelerator.is_main_process:  # before any process writes its part of the state
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            for old in sorted(self.root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[
                : -self.keep_last
            ]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def load(self, accelerator: Any, path: Path) -> dict[str, Any]:
        accelerator.load_state(str(path))
        return json.loads((path / STATE_FILE).read_text())


def save_hf_model(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    out: Path,
    *,
    merge: bool = True,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Save a plain HF directory atomically (LoRA merged unless merge=False). Every process
    calls it: gathering a sharded (FSDP / ZeRO-3) state dict is a collective; the main process
    writes, and all return once the directory is in place."""
    accelerator.wait_for_everyone()
    full = accelerator.get_state_dict(model)  # all ranks: a collective under FSDP / ZeRO-3
    if accelerator.is_main_process:
        _write_hf_model(accelerator.unwrap_model(model), full, tokenizer, out, merge, extra_files)
    accelerator.wait_for_everyone()
    return out


def _write_hf_model(
    model: Any,
    full: dict[str, Any],
    tokenizer: Any,
    out: Path,
    merge: bool,
    extra_files: dict[str, str] | None,
) -> None:
    import torch

    if merge and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model)
        with torch.no_grad():  # the gathered weights, then the adapters merged into them
            model.load_state_dict(full, strict=False)
        model = model.merge_and_unload()
        full = model.state_dict()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in full.items()}
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def install(source: Path, out: Path, marker: str, content: str) -> None:
    """Move a finished model directory's files into out/ one by one (os.replace), then write
    the marker last: a crash leaves either the complete source or missing files, never a mix."""
    (out / marker).unlink(missing_ok=True)
    for f in source.iterdir():
        if (out / f.name).is_dir():
            shutil.rmtree(out / f.name)
        os.replace(f, out / f.name)
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the stage is complete
    (out / marker).write_text(content)
