"""`instructrl rm`: the reward model on K-way rankings (paper, section 3.5 and appendix C.2).

Each prompt's K completions go through the network once each (K forwards, not K(K-1)); the
loss then takes all C(K, 2) pairs of that prompt from those K rewards, so a completion is never
reused across batch elements (the paper's remedy for overfitting). Ties are left out. After
training, a bias is set so that the demonstrations score 0 on average.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from instructrl import losses, models, rundir, trainer
from instructrl.batches import (
    RankedExample,
    collate_ranked,
    response_starts,
    score_texts,
    shared_prefix_hidden,
)
from instructrl.config import RMConfig, ScoreConfig, save_config
from instructrl.errors import UserError
from instructrl.plots import plot_curves
from instructrl.progress import progress_bar
from instructrl.records import Comparison, read_records, write_records
from instructrl.rollout import encode_response, ended, resolve_quantize

log = logging.getLogger(__name__)


def encode_comparisons(
    tokenizer: Any, comparisons: list[Comparison], *, max_length: int, where: str
) -> tuple[list[RankedExample], dict[str, int]]:
    examples, dropped, truncated = [], 0, 0
    for c in comparisons:
        reasons = c.finish_reasons or [None] * c.k
        encoded = [
            encode_response(tokenizer, c.prompt, r, max_length=max_length, ended=ended(f))
            for r, f in zip(c.responses, reasons, strict=True)
        ]
        if any(e is None for e in encoded):
            dropped += 1
            continue
        truncated += sum(e[2] for e in encoded)
        if not c.pairs():
            continue  # everything tied: no pair to learn from
        examples.append(RankedExample([e[0] for e in encoded], c.ranks(), prompt_len=encoded[0][1]))
    if dropped or truncated:
        log.warning(
            "%s: dropped %d of %d comparisons whose prompt exceeds max_length=%d - 8; truncated %d responses",
            where,
            dropped,
            len(comparisons),
            max_length,
            truncated,
        )
    if not examples:
        raise UserError(
            f"{where}: no usable comparisons (prompts too long for max_length={max_length}, or all tied)"
        )
    return examples, {
        "comparisons": len(examples),
        "dropped_long_prompt": dropped,
        "truncated_response": truncated,
    }


def batch_rewards(
    model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    rows: torch.Tensor,
    valid: torch.Tensor,
    starts: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, K) rewards from one forward pass over all (sum K_b) completions; `starts` (sum K_b,):
    where each one's response begins (read by a mean-pooled model)."""
    flat = model(input_ids, attention, **models.response_start_kwargs(model, starts))
    zeros = torch.zeros(rows.shape, dtype=flat.dtype, device=flat.device)
    return torch.where(valid, flat[rows.clamp(min=0)], zeros)


def batch_loss(model: Any, examples: list[RankedExample], pad_id: int, device: Any):
    ids, attn, ranks, valid, rows = (t.to(device) for t in collate_ranked(examples, pad_id))
    rewards = batch_rewards(model, ids, attn, rows, valid, response_starts(examples).to(device))
    loss, stats = losses.ranking_loss(rewards=rewards, ranks=ranks, valid=valid)
    return loss, stats, int(attn.sum())


@torch.no_grad()
def evaluate(
    model: Any, examples: list[RankedExample], pad_id: int, batch_size: int, device: Any
) -> dict[str, float]:
    """Pairwise accuracy and loss, weighted by pairs, over all examples."""
    was_training = model.training
    model.eval()
    correct = pairs = 0.0
    loss_sum = 0.0
    for i in range(0, len(examples), batch_size):
        loss, stats, _ = batch_loss(model, examples[i : i + batch_size], pad_id, device)
        n = float(stats["pairs"])
        correct += float(stats["accuracy"]) * n
        pairs += n
        loss_sum += loss.item() * len(examples[i : i + batch_size])
    model.train(was_training)
    return {
        "accuracy": correct / max(pairs, 1),
        "loss": loss_sum / max(len(examples), 1),
        "pairs": pairs,
    }


def _split(
    cfg: RMConfig, comparisons: list[Comparison]
) -> tuple[list[Comparison], list[Comparison]]:
    """Validation by prompt: every comparison of a held-out prompt goes to validation."""
    if cfg.val_data:
        return comparisons, read_records(cfg.val_data, "comparison")
    keys = sorted({c.prompt_id or json.dumps(c.prompt) for c in comparisons})
    n_val = round(len(keys) * cfg.val_fraction)
    order = trainer.epoch_order(len(keys), seed=cfg.seed, epoch=-1)
    val_keys = {keys[i] for i in order[:n_val]}
    key = lambda c: c.prompt_id or json.dumps(c.prompt)  # noqa: E731
    return [c for c in comparisons if key(c) not in val_keys], [
        c for c in comparisons if key(c) in val_keys
    ]


@torch.no_grad()
def head_features(model: Any, examples: list[RankedExample], pad_id: int) -> torch.Tensor:
    """(sum K, H) what the scalar head reads of each completion, in the examples' order: the
    backbone's final hidden state at its last token, or (rm.pooling=mean) the mean of those
    over its response tokens. The K completions of a prompt share their common prefix (the
    prompt): it is encoded once and its KV cache repeated K times."""
    out = []
    with progress_bar("rm features", total=sum(len(e.completions) for e in examples)) as update:
        for e in examples:
            out.append(
                shared_prefix_hidden(
                    model.backbone,
                    e.completions,
                    pad_id,
                    pooling=model.pooling,
                    response_start=e.prompt_len,
                )
            )
            update(len(e.completions))
    return torch.cat(out)


def split_features(
    model: Any, splits: dict[str, list[RankedExample]], pad_id: int
) -> dict[str, torch.Tensor]:
    """head_features of each non-empty split, each distinct list of completions computed
    once: the held-out panel ranks the validation prompts' own samples, so those two splits
    share every forward."""
    starts: dict[tuple, int] = {}  # each distinct completion list -> its first row in `flat`
    unique: list[RankedExample] = []
    rows = 0
    for examples in splits.values():
        for e in examples:
            key = _completions_key(e)
            if key not in starts:
                starts[key], rows = rows, rows + len(e.completions)
                unique.append(e)
    flat = head_features(model, unique, pad_id) if unique else None
    return {
        name: flat[
            [starts[_completions_key(e)] + i for e in examples for i in range(len(e.completions))]
        ]
        for name, examples in splits.items()
        if examples
    }


def _completions_key(example: RankedExample) -> tuple:
    return tuple(tuple(ids) for ids in example.completions)


def fit_head(
    cfg: RMConfig,
    model: Any,
    splits: dict[str, list[RankedExample]],
    pad_id: int,
    out: Path,
    *,
    main: bool = True,
) -> dict[str, Any]:
    """head_only: the scalar head fitted to the ranking loss over the frozen backbone's
    features (computed once), full batch, L2 on standardised features; then the
    standardisation is folded into the head, so the saved model is a plain reward model.
    Every process fits the same head (a few seconds); `main` writes the metrics."""
    model.eval()
    feats = split_features(model, splits, pad_id)
    mu, sd = feats["train"].mean(0), feats["train"].std(0).clamp(min=1e-5)
    tensors = {}
    for name, examples in splits.items():
        if examples:
            _, _, ranks, valid, rows = collate_ranked(examples, pad_id)
            tensors[name] = ((feats[name] - mu) / sd, ranks, valid, rows)

    w = torch.zeros(mu.shape[0], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=cfg.head_lr)

    def rewards(name: str) -> tuple[torch.Tensor, ...]:
        x, ranks, valid, rows = tensors[name]
        flat = x @ w + b  # (sum K,)
        r = torch.where(valid, flat[rows.clamp(min=0)], torch.zeros_like(rows, dtype=flat.dtype))
        return r, ranks, valid

    metrics = rundir.MetricsLog(
        out / "metrics.jsonl", enabled=main, trackers=rundir.open_trackers(cfg, main, "rm")
    )
    metrics.write(
        {"step": 0, **{f"rm/{k}_comparisons": len(v) for k, v in splits.items()}, "rm/head_only": 1}
    )
    for epoch in range(1, cfg.head_epochs + 1):
        r, ranks, valid = rewards("train")
        loss, stats = losses.ranking_loss(rewards=r, ranks=ranks, valid=valid)
        total = loss + cfg.head_weight_decay * w.square().sum()
        opt.zero_grad()
        total.backward()
        opt.step()
        if epoch % max(1, cfg.head_epochs // 20) == 0 or epoch == cfg.head_epochs:
            row = {"step": epoch, "rm/loss": loss.item(), "rm/accuracy": float(stats["accuracy"])}
            with torch.no_grad():
                for name, key in (("val", "val_accuracy"), ("heldout", "heldout_accuracy")):
                    if name in tensors:
                        r, ranks, valid = rewards(name)
                        row[f"rm/{key}"] = float(
                            losses.ranking_loss(rewards=r, ranks=ranks, valid=valid)[1]["accuracy"]
                        )
            metrics.write(row)
    metrics.close()
    with torch.no_grad():
        scale = w.detach() / sd
        model.head.weight.copy_(scale.unsqueeze(0))
        model.head.bias.fill_(float(b.detach() - (scale * mu).sum()))
    log.info("head fitted on frozen features (%d epochs): %s", cfg.head_epochs, row)
    return {"step": cfg.head_epochs}


def run(cfg: RMConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    accelerator = trainer.make_accelerator(cfg)
    torch.manual_seed(cfg.seed)

    tokenizer = models.load_tokenizer(cfg.model, padding_side="right")
    train_c, val_c = _split(cfg, read_records(cfg.data, "comparison"))
    train, report = encode_comparisons(
        tokenizer, train_c, max_length=cfg.max_length, where=str(cfg.data)
    )
    val = (
        encode_comparisons(tokenizer, val_c, max_length=cfg.max_length, where="validation")[0]
        if val_c
        else []
    )
    heldout = []
    if cfg.heldout_data:
        heldout = encode_comparisons(
            tokenizer,
            read_records(cfg.heldout_data, "comparison"),
            max_length=cfg.max_length,
            where=cfg.heldout_data,
        )[0]

    # head_only: no engine trains the backbone, whose features need its whole weights (under
    # a ZeRO-3 config transformers would load it as shards)
    with models.whole_weights() if cfg.head_only else contextlib.nullcontext():
        model = models.new_reward_model(
            cfg.model, dtype=torch.float32, pooling=cfg.pooling, layers=cfg.layers
        )
        scorer = None  # the model itself, unless the head reads bf16 features (rm.quantize)
        if features_dtype(cfg, accelerator.device) is not None:
            scorer = bf16_scorer(cfg, model)
            log.info("reward model features in bf16 (rm.quantize=%s)", cfg.quantize)
    if cfg.head_only:
        splits = {"train": train, "val": val, "heldout": heldout}
        state = fit_head(
            cfg,
            model if scorer is None else scorer,
            splits,
            tokenizer.pad_token_id,
            out,
            main=accelerator.is_main_process,
        )
    else:
        state, model = fine_tune(cfg, accelerator, model, tokenizer, train, val, heldout, report)
    final = _finish(accelerator, model, tokenizer, out, cfg, state, scorer)
    if accelerator.is_main_process:
        plot_curves(
            out / "metrics.jsonl",
            ["rm/loss", "rm/accuracy", "rm/val_accuracy", "rm/heldout_accuracy"],
            out / "accuracy.png",
            f"reward model from {cfg.model}",
        )
    return final


def features_dtype(cfg: RMConfig, device: Any) -> str | None:
    """ "bfloat16" when the head_only backbone runs in bf16 (rm.quantize), else None."""
    if not cfg.head_only:
        return None
    return "bfloat16" if resolve_quantize(cfg.quantize, device) == "bf16" else None


def bf16_scorer(cfg: RMConfig, model: Any) -> Any:
    """A reward model whose (frozen) backbone is loaded in bfloat16 exactly as load_reward_model
    will load the saved one (weights cast on load; rotary buffers as transformers builds them,
    which a plain .to(bfloat16) would round), and whose head *is* `model`'s head. The features
    and the demonstrations' bias come from it; the saved backbone keeps its fp32 weights, so a
    value model initialised from the RM keeps the policy's own lower layers."""
    backbone = models.load_policy(cfg.model, dtype=torch.bfloat16).requires_grad_(False)
    layers = len(models.decoder_layers(model))  # as many as the saved model (rm.layers)
    if layers < len(models.decoder_layers(backbone)):
        models.truncate_layers(backbone, layers, where=cfg.model)
    return models.reward_model_on(backbone, model.head, pooling=model.pooling)


def fine_tune(
    cfg: RMConfig,
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    train: list[RankedExample],
    val: list[RankedExample],
    heldout: list[RankedExample],
    report: dict[str, int],
) -> tuple[dict[str, Any], Any]:
    """The RM loss through the backbone's trainable layers (trainer.fit: checkpoints, resume);
    the training state and the (prepared) model."""
    model.backbone = trainer.prepare_model(model.backbone, cfg)
    run = trainer.setup(accelerator, cfg, model.train(), len(train))
    model, pad_id = run.model, tokenizer.pad_token_id

    def loss_fn(batch: list[int]):
        loss, stats, tokens = batch_loss(
            model, [train[i] for i in batch], pad_id, accelerator.device
        )
        return loss, {k: float(v) for k, v in stats.items()}, tokens

    def eval_fn() -> dict[str, float]:
        row: dict[str, float] = {}
        if val:
            v = evaluate(model, val, pad_id, cfg.batch_size, accelerator.device)
            row.update(val_accuracy=v["accuracy"], val_loss=v["loss"])
        if heldout:
            row["heldout_accuracy"] = evaluate(
                model, heldout, pad_id, cfg.batch_size, accelerator.device
            )["accuracy"]
        return row

    first = {
        "rm/train_comparisons": len(train),
        "rm/val_comparisons": len(val),
        "rm/heldout_comparisons": len(heldout),
        **{f"rm/{k}": v for k, v in report.items()},
    }
    evaluation = trainer.Evaluation(eval_fn) if (val or heldout) else None
    state = trainer.fit(run, prefix="rm", loss_fn=loss_fn, evaluation=evaluation, first_row=first)
    return state, model


def normalising_bias(
    model: Any, tokenizer: Any, demos_path: str, *, max_length: int, batch_size: int, device: Any
) -> tuple[float, int]:
    """-mean raw reward of the demonstrations, so that they score 0 on average."""
    demos = read_records(demos_path, "demonstration")
    usable = [
        d
        for d in demos
        if encode_response(tokenizer, d.prompt, d.response, max_length=max_length) is not None
    ]
    rewards = score_texts(
        model,
        tokenizer,
        [(d.prompt, d.response) for d in usable],
        batch_size=batch_size,
        max_length=max_length,
        device=device,
    )
    return -sum(rewards) / max(len(rewards), 1), len(rewards)


def _finish(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    out: Path,
    cfg: RMConfig,
    state: dict[str, Any],
    scorer: Any = None,
) -> Path:
    """Normalise (the bias from `scorer`, the bf16 model as it will be scored, when given; else
    from `model`) and save `model`."""
    inner = accelerator.unwrap_model(model).eval()
    merged = cfg.lora.r > 0  # a reward model directory is a plain model: adapters always merged
    if merged:
        inner.backbone = inner.backbone.merge_and_unload()
    bias, n_demos = 0.0, 0
    if cfg.demos:
        scoring = inner if scorer is None else scorer
        scoring.bias.fill_(0.0)
        bias, n_demos = normalising_bias(
            scoring,
            tokenizer,
            cfg.demos,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size * 2,
            device=accelerator.device,
        )
    else:
        log.warning(
            "no demos=FILE given: the reward model is not normalised (demonstrations need not score 0)"
        )
    info = {
        "trained_from": cfg.model,
        "steps": state["step"],
        "normalised_on": n_demos,
        "max_length": cfg.max_length,
        **({"dtype": "bfloat16"} if scorer is not None else {}),
    }
    # a collective when sharded; head_only trains no prepared model
    full = None if merged or cfg.head_only else accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = out / ".final"
        models.save_reward_model(inner, tokenizer, tmp, bias=bias, extra=info, state_dict=full)
        rundir.install(
            tmp,
            out,
            "selected.json",
            json.dumps({"selected_by": "last", "step": state["step"], "bias": bias}) + "\n",
        )
    accelerator.wait_for_everyone()
    log.info("reward model in %s (bias %.4f from %d demonstrations)", out, bias, n_demos)
    return out


def run_score(cfg: ScoreConfig) -> Path:
    """`instructrl score`: the input records with `reward` added."""
    device = models.pick_device(cfg.device)
    model = models.load_reward_model(cfg.reward, device=device)
    tokenizer = models.load_tokenizer(cfg.reward, padding_side="right")
    max_length = cfg.max_length or int(
        (getattr(model.config, "instructrl", None) or {}).get("max_length", 512)
    )
    records = read_records(cfg.data)
    if records[0].kind not in ("sample", "demonstration"):
        raise UserError(
            f"score: {cfg.data}: expected sample or demonstration records, got {records[0].kind} records"
        )
    rewards = score_texts(
        model,
        tokenizer,
        [(r.prompt, r.response) for r in records],
        batch_size=cfg.batch_size,
        max_length=max_length,
        device=device,
        finish_reasons=[getattr(r, "finish_reason", None) for r in records],
    )
    rows = []
    for record, reward in zip(records, rewards, strict=True):
        row = record.to_dict()
        row["reward"] = round(reward, 6)
        rows.append(row)
    return write_records(cfg.out, rows)
