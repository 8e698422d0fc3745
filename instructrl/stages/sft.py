"""`instructrl sft`: supervised fine-tuning on demonstrations (paper, section 3.5 and C.1).

The loss is the NLL of response tokens only (EOS included); the prompt is rendered with the
same chat template the policy sees at generation time. Batches are right-padded with an
attention mask, one example per row, so no example attends to another.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from instructrl import models, rollout, rundir, trainer
from instructrl.batches import Example, collate, mean_nll, nll_loss, ptx_examples, score_texts
from instructrl.config import SFTConfig, save_config
from instructrl.errors import UserError
from instructrl.plots import plot_curves
from instructrl.records import Demonstration, read_records

log = logging.getLogger(__name__)


def encode_demonstrations(
    tokenizer: Any, demos: list[Demonstration], *, max_length: int, where: str
) -> tuple[list[Example], dict[str, int]]:
    """Tokenize prompt (chat template) + response + EOS. A prompt that leaves fewer than 8
    response tokens is dropped; a response that overflows is truncated (and loses its EOS)."""
    examples, dropped, truncated = [], 0, 0
    for demo in demos:
        encoded = rollout.encode_response(
            tokenizer, demo.prompt, demo.response, max_length=max_length
        )
        if encoded is None:
            dropped += 1
            continue
        ids, n_prompt, cut = encoded
        truncated += cut
        examples.append(Example(ids, n_prompt))
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


class RMJudge:
    """Mean reward of greedy responses to validation prompts: the paper's SFT checkpoint
    selection (C.1: the final SFT model is selected by RM score on the validation set)."""

    def __init__(self, cfg: SFTConfig, tokenizer: Any, val_demos: list[Demonstration], device: Any):
        self.rm = models.load_reward_model(cfg.reward, device=device)
        self.rm_tokenizer = models.load_tokenizer(cfg.reward, padding_side="right")
        models.check_same_tokenizer(tokenizer, self.rm_tokenizer, names=("model", "reward"))
        self.prompts = [d.prompt for d in val_demos[: cfg.rm_eval_prompts]]
        self.prompt_ids = rollout.encode_prompts(tokenizer, self.prompts)
        self.tokenizer, self.cfg = tokenizer, cfg

    @torch.no_grad()
    def __call__(self, policy: Any) -> float:
        was_training = policy.training
        policy.eval()
        outs = rollout.generate(
            policy,
            self.tokenizer,
            self.prompt_ids,
            max_new_tokens=self.cfg.rm_eval_tokens,
            temperature=0,
            batch_size=self.cfg.batch_size,
        )
        policy.train(was_training)
        pairs = [(p, g.text) for p, g in zip(self.prompts, outs, strict=True)]
        scores = score_texts(
            self.rm,
            self.rm_tokenizer,
            pairs,
            batch_size=self.cfg.batch_size,
            max_length=int(getattr(self.rm.config, "max_position_embeddings", 2048)),
            device=next(self.rm.parameters()).device,
            finish_reasons=[g.finish_reason for g in outs],
        )
        return sum(scores) / len(scores)


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
    models.set_dropout(model, cfg.dropout)  # the modules' own, not only the config's
    model = trainer.prepare_model(model, cfg).train()
    run = trainer.setup(accelerator, cfg, model, len(train))
    model, pad_id = run.model, tokenizer.pad_token_id

    def loss_fn(batch: list[int]):
        ids, attn, mask = (
            t.to(accelerator.device) for t in collate([train[i] for i in batch], pad_id)
        )
        loss, _ = nll_loss(model, ids, attn, mask)
        return loss, {"loss": loss.item()}, int(attn.sum())

    rm_judge = (
        RMJudge(cfg, tokenizer, val_demos, accelerator.device) if cfg.reward and val_demos else None
    )

    def eval_fn() -> dict[str, float]:
        row = {"val_loss": mean_nll(model, val, pad_id, cfg.batch_size, accelerator.device)}
        if rm_judge is not None:
            row["val_rm_score"] = rm_judge(accelerator.unwrap_model(model))
        return row

    def save_best() -> None:
        rundir.save_hf_model(accelerator, model, tokenizer, out / "best", merge=cfg.lora.merge)

    evaluation = trainer.Evaluation(
        eval_fn, ("val_rm_score", "max") if rm_judge else ("val_loss", "min"), save_best
    )
    first = {
        "sft/train_examples": len(train),
        "sft/val_examples": len(val),
        **{f"sft/{k}": v for k, v in report.items()},
    }
    state = trainer.fit(
        run, prefix="sft", loss_fn=loss_fn, evaluation=evaluation if val else None, first_row=first
    )
    final = _finish(accelerator, model, tokenizer, out, cfg, state)
    if accelerator.is_main_process:
        plot_curves(
            out / "metrics.jsonl",
            ["sft/loss", "sft/val_loss", "sft/lr"],
            out / "loss.png",
            f"SFT {cfg.model}",
        )
    return final


def _finish(
    accelerator: Any, model: Any, tokenizer: Any, out: Path, cfg: SFTConfig, state: dict[str, Any]
) -> Path:
    """Install the selected model into out/: best validation loss, else the last step."""
    accelerator.wait_for_everyone()  # best/ is complete
    best = out / "best"
    use_best = state.get("best_step") is not None and best.is_dir()
    accelerator.wait_for_everyone()  # every process has decided before the main one moves best/
    if use_best:
        source = best
        key = "val_rm_score" if cfg.reward else "val_loss"
        selected = {"selected_by": key, "step": state["best_step"], key: state["best"]}
    else:
        source = rundir.save_hf_model(
            accelerator, model, tokenizer, out / "final", merge=cfg.lora.merge
        )
        selected = {"selected_by": "last", "step": state["step"]}
    if accelerator.is_main_process:
        rundir.install(source, out, "selected.json", json.dumps(selected) + "\n")
    accelerator.wait_for_everyone()
    log.info("SFT model in %s (%s)", out, ", ".join(f"{k} {v}" for k, v in selected.items()))
    return out
