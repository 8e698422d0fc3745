"""`instructrl sft`: supervised fine-tuning on demonstrations (paper, section 3.5 and C.1).

The loss is the NLL of response tokens only (EOS included); the prompt is rendered with the
same chat template the policy sees at generation time. Batches are right-padded with an
attention mask, one example per row, so no example attends to another.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from instructrl import losses, models, trainer
from instructrl.config import SFTConfig, save_config
from instructrl.errors import UserError
from instructrl.progress import progress_bar
from instructrl.records import Demonstration, read_records
from instructrl.rollout import render_prompt

log = logging.getLogger(__name__)


@dataclass
class Example:
    input_ids: list[int]
    n_prompt: int  # tokens before the response; the loss covers input_ids[n_prompt:]


def encode_demonstrations(
    tokenizer: Any, demos: list[Demonstration], *, max_length: int, where: str
) -> tuple[list[Example], dict[str, int]]:
    """Tokenize prompt (chat template) + response + EOS. A prompt that leaves fewer than 8
    response tokens is dropped; a response that overflows is truncated (and loses its EOS)."""
    eos = tokenizer.eos_token_id
    examples, dropped, truncated = [], 0, 0
    for demo in demos:
        prompt_ids = tokenizer(render_prompt(tokenizer, demo.prompt), add_special_tokens=False)[
            "input_ids"
        ]
        response_ids = [*tokenizer(demo.response, add_special_tokens=False)["input_ids"], eos]
        if len(prompt_ids) > max_length - 8:
            dropped += 1
            continue
        if len(prompt_ids) + len(response_ids) > max_length:
            truncated += 1
            response_ids = response_ids[: max_length - len(prompt_ids)]
        examples.append(Example(prompt_ids + response_ids, len(prompt_ids)))
    report = {
        "examples": len(examples),
        "dropped_long_prompt": dropped,
        "truncated_response": truncated,
    }
    if dropped or truncated:
        log.warning(
            "%s: dropped %d of %d demonstrations whose prompt exceeds max_length=%d - 8; truncated %d responses",
            where,
            dropped,
            len(demos),
            max_length,
            truncated,
        )
    if not examples:
        raise UserError(
            f"{where}: no usable demonstrations (all {len(demos)} prompts exceed max_length={max_length})"
        )
    return examples, report


def ptx_examples(
    tokenizer: Any, *, n: int, max_length: int, seed: int, split: str = "ptx"
) -> list[Example]:
    """n chunks of held-out pretraining text, every token in the loss (n_prompt = 0)."""
    from instructrl.data import load_heldout_text

    ids: list[int] = []
    for doc in load_heldout_text(split):
        ids.extend(tokenizer(doc["text"], add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= n * max_length * 2:
            break
    chunks = [ids[i : i + max_length] for i in range(0, len(ids) - max_length + 1, max_length)]
    random.Random(seed).shuffle(chunks)
    return [Example(c, 0) for c in chunks[:n]]


def collate(
    examples: list[Example], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) input ids, attention mask, and the loss mask (response tokens)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.bool)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention[i, :n] = True
        loss_mask[i, max(e.n_prompt, 1) : n] = True  # the first token has no prediction
    return input_ids, attention, loss_mask


def batch_loss(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, loss_mask: torch.Tensor
):
    """Mean NLL over the batch's response tokens, logits computed only where the loss needs them."""
    hidden = models.final_hidden(model, input_ids, attention)
    logits = models.next_token_logits(model, hidden, loss_mask)  # (N, V)
    labels = input_ids[loss_mask]  # (N,)
    return losses.nll_loss(logits=logits, labels=labels)


@torch.no_grad()
def evaluate(
    model: Any, examples: list[Example], pad_id: int, batch_size: int, device: Any
) -> float:
    """Token-weighted mean NLL over examples."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch_size):
        ids, attn, mask = (t.to(device) for t in collate(examples[i : i + batch_size], pad_id))
        loss, stats = batch_loss(model, ids, attn, mask)
        total += loss.item() * int(stats["tokens"])
        tokens += int(stats["tokens"])
    model.train(was_training)
    return total / max(tokens, 1)


def _split(
    cfg: SFTConfig, demos: list[Demonstration]
) -> tuple[list[Demonstration], list[Demonstration]]:
    if cfg.val_data:
        return demos, read_records(cfg.val_data, "demonstration")
    n_val = round(len(demos) * cfg.val_fraction)
    if n_val == 0:
        return demos, []
    order = trainer.epoch_order(len(demos), seed=cfg.seed, epoch=-1)
    val = {i for i in order[:n_val]}
    return [d for i, d in enumerate(demos) if i not in val], [
        d for i, d in enumerate(demos) if i in val
    ]


def run(cfg: SFTConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    accelerator = trainer.make_accelerator(cfg)
    torch.manual_seed(cfg.seed)

    tokenizer = models.load_tokenizer(cfg.model, padding_side="right")
    train_demos, val_demos = _split(cfg, read_records(cfg.data, "demonstration"))
    train, report = encode_demonstrations(
        tokenizer, train_demos, max_length=cfg.max_length, where=str(cfg.data)
    )
    val = (
        encode_demonstrations(tokenizer, val_demos, max_length=cfg.max_length, where="validation")[
            0
        ]
        if val_demos
        else []
    )
    if cfg.ptx_fraction > 0:
        train += ptx_examples(
            tokenizer,
            n=math.ceil(cfg.ptx_fraction * len(train)),
            max_length=cfg.max_length,
            seed=cfg.seed,
        )

    model = models.load_policy(cfg.model, device="cpu", dtype=torch.float32)
    if cfg.dropout > 0 and hasattr(model.config, "attention_dropout"):
        model.config.attention_dropout = cfg.dropout
    model = trainer.prepare_model(model, cfg)
    model.train()
    optimizer = trainer.make_optimizer(model, cfg)
    processes = accelerator.num_processes
    per_epoch = trainer.steps_per_epoch(len(train), cfg.batch_size, cfg.grad_accum, processes)
    total = cfg.max_steps or cfg.epochs * per_epoch
    scheduler = trainer.make_scheduler(optimizer, cfg, total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    checkpoints = trainer.Checkpointer(out, cfg.keep_last)
    state: dict[str, Any] = {"step": 0, "best_val_loss": None, "best_step": None}
    latest = checkpoints.latest() if cfg.resume else None
    if latest is not None:
        state = checkpoints.load(accelerator, latest)
        log.info("resumed from %s (step %d of %d)", latest, state["step"], total)
    elif cfg.resume:
        log.info("resume=true but no checkpoint in %s: starting fresh", checkpoints.root)
    metrics = trainer.MetricsLog(
        out / "metrics.jsonl", truncate_after_step=state["step"] if latest else None
    )
    if not latest:
        metrics.write(
            {
                "step": 0,
                "sft/train_examples": len(train),
                "sft/val_examples": len(val),
                **{f"sft/{k}": v for k, v in report.items()},
            }
        )

    pad_id = tokenizer.pad_token_id
    speed = trainer.Throughput()
    eval_every = cfg.eval_every or per_epoch
    with progress_bar("sft", total=total) as update:
        update(state["step"])
        for step in range(state["step"], total):
            epoch, in_epoch = divmod(step, per_epoch)
            batches = trainer.micro_batches(
                len(train), batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch
            )
            step_loss, tokens = 0.0, 0
            for batch in trainer.step_batches(
                batches, in_epoch, cfg.grad_accum, accelerator.process_index, processes
            ):
                ids, attn, mask = (
                    t.to(accelerator.device) for t in collate([train[i] for i in batch], pad_id)
                )
                with accelerator.autocast():
                    loss, _ = batch_loss(model, ids, attn, mask)
                accelerator.backward(loss / cfg.grad_accum)
                step_loss += loss.item() / cfg.grad_accum
                tokens += int(attn.sum())
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
                "sft/loss": step_loss,
                "sft/lr": scheduler.get_last_lr()[0],
                "sft/tokens_per_s": speed.add(tokens),
            }
            if grad_norm is not None:
                row["sft/grad_norm"] = float(grad_norm)
            if val and (done % eval_every == 0 or done == total):
                row["sft/val_loss"] = evaluate(
                    model, val, pad_id, cfg.batch_size, accelerator.device
                )
                if state["best_val_loss"] is None or row["sft/val_loss"] < state["best_val_loss"]:
                    state.update(best_val_loss=row["sft/val_loss"], best_step=done)
                    trainer.save_hf_model(
                        accelerator, model, tokenizer, out / "best", merge=cfg.lora.merge
                    )
            if done % cfg.log_every == 0 or "sft/val_loss" in row or done == total:
                metrics.write(row)
            update(1, loss=step_loss, tokens_per_s=row["sft/tokens_per_s"])
            state["step"] = done
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                checkpoints.save(accelerator, state)

    final = _finish(accelerator, model, tokenizer, out, cfg, state)
    trainer.plot_curves(
        out / "metrics.jsonl",
        ["sft/loss", "sft/val_loss", "sft/lr"],
        out / "loss.png",
        f"SFT {cfg.model}",
    )
    return final


def _finish(
    accelerator: Any, model: Any, tokenizer: Any, out: Path, cfg: SFTConfig, state: dict[str, Any]
) -> Path:
    """Install the selected model into out/: best validation loss, else the last step.

    Files are moved one by one with os.replace and `selected.json` is written last, so a crash
    here leaves either the complete `best/` directory or missing files, never a mixed model.
    """
    import json
    import shutil

    best = out / "best"
    if state.get("best_step") is not None and best.is_dir():
        source = best
        selected = {
            "selected_by": "val_loss",
            "step": state["best_step"],
            "val_loss": state["best_val_loss"],
        }
    else:
        source = trainer.save_hf_model(
            accelerator, model, tokenizer, out / "final", merge=cfg.lora.merge
        )
        selected = {"selected_by": "last", "step": state["step"]}
    if accelerator.is_main_process:
        (out / "selected.json").unlink(missing_ok=True)
        for f in source.iterdir():
            os.replace(f, out / f.name)
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the stage is complete
        (out / "selected.json").write_text(json.dumps(selected) + "\n")
    log.info("SFT model in %s (%s)", out, ", ".join(f"{k} {v}" for k, v in selected.items()))
    return out
