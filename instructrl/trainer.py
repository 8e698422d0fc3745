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
from instructrl.progress import progress_bar

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
    """No gradients (and no optimizer state) for the embeddings and the first n layers.

    The input embedding is frozen too: if it trained, backward would have to run through every
    layer to reach it, and the lever would save nothing. With tied embeddings (SmolLM2) this
    also freezes the unembedding; the top layers and norms adapt.
    """
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None or n_layers > len(layers):
        raise ValueError(
            f"freeze_layers={n_layers}: the model has {0 if layers is None else len(layers)} layers"
        )
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


def fit(
    *,
    accelerator: Any,
    cfg: TrainConfig,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    out: Path,
    prefix: str,
    n_examples: int,
    batch_size: int,
    total: int,
    per_epoch: int,
    loss_fn: Any,
    eval_fn: Any = None,
    eval_every: int = 0,
    select: tuple[str, str] | None = None,
    save_best: Any = None,
    first_row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The training loop of SFT and RM: resume, micro-batches, clipping, metrics, checkpoints.

    loss_fn(indices) -> (loss, stats, tokens) for one micro-batch of example indices;
    eval_fn() -> {metric: value}; select = (metric, "min" | "max") picks the best evaluation,
    for which save_best() is called. Returns the trainer state.
    """
    checkpoints = Checkpointer(out, cfg.keep_last)
    state: dict[str, Any] = {"step": 0, "best": None, "best_step": None}
    latest = checkpoints.latest() if cfg.resume else None
    if latest is not None:
        state = checkpoints.load(accelerator, latest)
        log.info("resumed from %s (step %d of %d)", latest, state["step"], total)
    elif cfg.resume:
        log.info("resume=true but no checkpoint in %s: starting fresh", checkpoints.root)
    metrics = MetricsLog(
        out / "metrics.jsonl", truncate_after_step=state["step"] if latest else None
    )
    if not latest and first_row:
        metrics.write({"step": 0, **first_row})
    processes, speed = accelerator.num_processes, Throughput()
    eval_every = eval_every or per_epoch
    with progress_bar(prefix, total=total) as update:
        update(state["step"])
        for step in range(state["step"], total):
            epoch, in_epoch = divmod(step, per_epoch)
            batches = micro_batches(n_examples, batch_size=batch_size, seed=cfg.seed, epoch=epoch)
            sums: dict[str, float] = {}
            tokens = 0
            for batch in step_batches(
                batches, in_epoch, cfg.grad_accum, accelerator.process_index, processes
            ):
                with accelerator.autocast():
                    loss, stats, n_tokens = loss_fn(batch)
                accelerator.backward(loss / cfg.grad_accum)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
                tokens += n_tokens
            grad_norm = (
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if cfg.grad_clip > 0
                else None
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            row = {
                "step": done,
                "epoch": round(done / per_epoch, 3),
                **{f"{prefix}/{k}": v for k, v in sums.items()},
                f"{prefix}/lr": scheduler.get_last_lr()[0],
                f"{prefix}/tokens_per_s": speed.add(tokens),
            }
            if grad_norm is not None:
                row[f"{prefix}/grad_norm"] = float(grad_norm)
            if eval_fn is not None and (done % eval_every == 0 or done == total):
                row.update({f"{prefix}/{k}": v for k, v in eval_fn().items()})
                if select and save_best and f"{prefix}/{select[0]}" in row:
                    value = row[f"{prefix}/{select[0]}"]
                    better = state["best"] is None or (
                        value < state["best"] if select[1] == "min" else value > state["best"]
                    )
                    if better:
                        state.update(best=value, best_step=done)
                        save_best()
            if (
                done % cfg.log_every == 0
                or done == total
                or any("val" in k or "heldout" in k for k in row)
            ):
                metrics.write(row)
            update(
                1, loss=sums.get("loss", float("nan")), tokens_per_s=row[f"{prefix}/tokens_per_s"]
            )
            state["step"] = done
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                checkpoints.save(accelerator, state)
    return state


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
