"""SFT training speed and memory: instructrl's loop against a plain `transformers.Trainer`.

    python bench/sft.py [--steps 6] [--batch-size 8] [--model default]

Both sides train the same model on the same demonstrations (the training panel's, chat
template applied, response-only loss), batch 8, max length 256, AdamW (0.9, 0.95), cosine
schedule, fp32 on CPU, each in its own process so peak RSS is its own. Figures: training
tokens/s (real tokens; ours counts the first step's warm-up, the Trainer's does not) and
peak RSS. Measured on the 2-core machine: ratio 1.17 (93.7 vs 80.0 tokens/s), peak RSS
4.91 GB vs 5.25 GB.
Last line: {"bench": "sft", "ratio": ours / Trainer tokens/s, "goal": ">= 1.0", ...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_demos(path: Path, n: int) -> None:
    from instructrl import data
    from instructrl.labelers import Panel
    from instructrl.records import write_records

    write_records(path, Panel("train").demonstrate(data.load_prompts("train")[:n]))


def side_ours(args, demos: Path, out: Path) -> dict:
    from instructrl.config import SFTConfig, load_config
    from instructrl.rundir import read_metrics
    from instructrl.stages import sft

    cfg = load_config(
        SFTConfig,
        [
            f"model={args.model}",
            f"data={demos}",
            f"out={out}",
            f"max_steps={args.steps}",
            f"batch_size={args.batch_size}",
            "max_length=256",
            "val_fraction=0",
            "checkpoint_every=0",
            *args.ours,
        ],
    )
    start = time.perf_counter()
    sft.run(cfg)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "sft/loss" in r]
    return {"wall_s": time.perf_counter() - start, "rows": rows}


def side_trainer(args, demos: Path, out: Path) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from instructrl import models
    from instructrl.records import read_records
    from instructrl.stages import sft

    tokenizer = models.load_tokenizer(args.model, padding_side="right")
    examples, _ = sft.encode_demonstrations(
        tokenizer, read_records(demos, "demonstration"), max_length=256, where="bench"
    )
    rows = [
        {"input_ids": e.input_ids, "labels": [-100] * e.n_prompt + e.input_ids[e.n_prompt :]}
        for e in examples
    ]

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        pad = tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor(
                [r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]
            ),
            "attention_mask": torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch]
            ),
            "labels": torch.tensor(
                [r["labels"] + [-100] * (width - len(r["labels"])) for r in batch]
            ),
        }

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    model = models.load_policy(args.model).train()
    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-5,
        adam_beta1=0.9,
        adam_beta2=0.95,
        lr_scheduler_type="cosine",
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=0,
        max_grad_norm=1.0,
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=rows, data_collator=collate, callbacks=[StepTimes()]
    )
    start = time.perf_counter()
    trainer.train()
    # the same batches in the same order as ours is not guaranteed; tokens per step are averaged
    tokens_per_step = sum(len(r["input_ids"]) for r in rows) / len(rows) * args.batch_size
    return {
        "wall_s": time.perf_counter() - start,
        "step_times": times,
        "tokens_per_step": tokens_per_step,
    }


def child(args) -> None:
    demos, out = Path(args.demos), Path(args.out)
    result = side_ours(args, demos, out) if args.side == "ours" else side_trainer(args, demos, out)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print("RESULT " + json.dumps(result))


def run_side(side: str, args, demos: Path, tmp: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--demos",
        str(demos),
        "--out",
        str(tmp / side),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--model",
        args.model,
    ]
    cmd += [f"--ours={o}" for o in args.ours]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--model", default="default")
    p.add_argument(
        "--ours", action="append", default=[], help="extra key=value for our side (e.g. lora.r=16)"
    )
    p.add_argument("--side", choices=["ours", "trainer"])
    p.add_argument("--demos")
    p.add_argument("--out")
    args = p.parse_args()
    if args.side:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demos = tmp / "demos.jsonl"
        make_demos(demos, args.steps * args.batch_size)
        ours = run_side("ours", args, demos, tmp)
        peer = run_side("trainer", args, demos, tmp)
    rows = ours["rows"]
    # ours: cumulative tokens/s over all steps, first step included (conservative for us)
    ours_tps = rows[-1]["sft/tokens_per_s"]
    st = peer["step_times"]
    peer_tps = (
        peer["tokens_per_step"] * (len(st) - 1) / (st[-1] - st[0]) if len(st) > 1 else float("nan")
    )
    print(f"{'':22s} {'tokens/s':>10s} {'peak RSS':>10s}")
    print(f"{'instructrl sft':22s} {ours_tps:10.1f} {ours['peak_rss_gb']:9.2f}G")
    print(f"{'transformers.Trainer':22s} {peer_tps:10.1f} {peer['peak_rss_gb']:9.2f}G")
    print(
        json.dumps(
            {
                "bench": "sft",
                "ratio": round(ours_tps / peer_tps, 2),
                "goal": ">= 1.0",
                "ours_tokens_per_s": round(ours_tps, 1),
                "trainer_tokens_per_s": round(peer_tps, 1),
                "ours_peak_rss_gb": round(ours["peak_rss_gb"], 2),
                "trainer_peak_rss_gb": round(peer["peak_rss_gb"], 2),
                "rss_ratio": round(ours["peak_rss_gb"] / peer["peak_rss_gb"], 2),
                "steps": args.steps,
                "batch_size": args.batch_size,
                "extra": args.ours,
            }
        )
    )


if __name__ == "__main__":
    main()
