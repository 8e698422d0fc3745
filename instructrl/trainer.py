"""Training machinery shared by the SFT and reward-model stages (and PPO's checkpoints).

accelerate owns devices, mixed precision and distribution (one CPU process by default; DDP,
FSDP or DeepSpeed from an accelerate config via `accelerate launch`). Checkpoints are written
into a temp dir and renamed into place, so a kill mid-save leaves the previous one intact.
Data order is a pure function of (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from instructrl import models
from instructrl.config import TrainConfig

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"


def make_accelerator(cfg: TrainConfig, gradient_accumulation_steps: int = 1) -> Any:
    from accelerate import Accelerator

    device = models.pick_device(cfg.device)
    on_gpu = device.startswith("cuda")
    return Accelerator(
        cpu=not on_gpu,
        mixed_precision="bf16" if on_gpu and cfg.bf16 else "no",
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def prepare_model(model: Any, cfg: TrainConfig) -> Any:
    """Freeze lower layers, add LoRA adapters, gradient checkpointing; returns the model to train."""
    if cfg.freeze_layers > 0:
        freeze_lower(model, cfg.freeze_layers)
    if cfg.lora.r > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules),
                bias="none",
            ),
        )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model


def freeze_lower(model: Any, n_layers: int) -> None:
    """No gradients (and no optimizer state) for the embeddings and the first n layers."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None or n_layers > len(layers):
        raise ValueError(
            f"freeze_layers={n_layers}: the model has {0 if layers is None else len(layers)} layers"
        )
    tied = getattr(model.config, "tie_word_embeddings", False)
    if not tied:  # a tied embedding is also the unembedding, which every loss needs to train
        decoder.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n_layers]:
        layer.requires_grad_(False)


def make_optimizer(model: Any, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check freeze_layers and lora)")
    return torch.optim.AdamW(
        params, lr=lr or cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    """Linear warmup, then cosine decay to min_lr_ratio of the peak (paper: 10 %)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=max(1, total_steps),
        min_lr_rate=cfg.min_lr_ratio,
    )


def epoch_order(n: int, *, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batches(n: int, *, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(n, seed=seed, epoch=epoch)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class MetricsLog:
    """Appends one JSON row per call to out/metrics.jsonl (flushed, so a crash loses nothing)."""

    def __init__(self, path: Path, *, truncate_after_step: int | None = None):
        self.path = path
        if (
            truncate_after_step is not None and path.exists()
        ):  # resume: drop rows past the checkpoint
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r.get("step", 0) <= truncate_after_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif truncate_after_step is None:
            path.write_text("")

    def write(self, row: dict[str, Any]) -> None:
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
        shutil.rmtree(tmp, ignore_errors=True)
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
    """Save a plain HF directory atomically (LoRA merged unless merge=False)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return out
    model = accelerator.unwrap_model(model)
    if merge and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    state = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in accelerator.get_state_dict(model).items()
    }
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
    return out


def plot_curves(metrics: Path, keys: Sequence[str], png: Path, title: str) -> Path | None:
    """One panel per metric key against step; skipped when a key never appears."""
    rows = read_metrics(metrics)
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.2), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items(), strict=True):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, lw=1.5)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


class Throughput:
    """Tokens per second over the run so far (for progress bars and metrics)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, tokens: int) -> float:
        self.tokens += tokens
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)


def steps_per_epoch(n_examples: int, cfg_batch: int, grad_accum: int, processes: int) -> int:
    return max(1, math.ceil(n_examples / (cfg_batch * grad_accum * processes)))


def step_batches(
    batches: list[list[int]], step_in_epoch: int, grad_accum: int, process: int, processes: int
) -> Iterator[list[int]]:
    """The micro-batches of one optimizer step for one process (DDP shards by process index)."""
    start = step_in_epoch * grad_accum * processes
    for k in range(grad_accum):
        i = start + k * processes + process
        if i < len(batches):
            yield batches[i]
