"""PPO iteration time and peak RSS: instructrl against TRL 1.12.0's PPOTrainer.

    python bench/ppo.py [--iterations 3] [--quantize none|bf16] [--bf16]

TRL 1.12.0 is the last release that ships a PPO trainer (`trl.experimental.ppo`). The bench
makes its own venv, bench/.venv-ppo (torch 2.13.0 CPU, transformers, accelerate, datasets, then
`trl==1.12.0 --no-deps`), on first use. Both sides: the default model as policy and reference,
reward and value models built from the same backbone with a scalar head, fp32 on CPU, 1 PPO
epoch, one minibatch, no pretraining mix; first at 8 prompts x 32 new tokens, then 32 x 64.
Each side runs in its own process; iteration time excludes the first iteration (warm-up).
Last line: {"bench": "ppo", "ratio": TRL s/iter / ours s/iter at 8 x 32, "goal": ">= 1.0", ...}.
Measured on the 2-core machine (full-size reward and value models on both sides, 2026-11-26):
8 x 32: ours 20.7 s/it, TRL 25.3 s/it (1.22x), peak RSS 7.7 GB vs 8.5 GB (0.90x);
32 x 64: ours 100.4 s/it, TRL 105.5 s/it (1.05x), peak RSS 15.8 GB vs 24.1 GB (0.66x).
With --quantize bf16 (2026-11-27): 8 x 32 23.7 vs 27.9 s/it (1.17x); 32 x 64 103.9 vs
108.2 (1.04x): the update and evaluation, not sampling, hold most of an iteration.
2026-11-27, later (after models.contiguous_unembedding): fp32 8 x 32 18.51 vs 18.82 s/it
(1.02x), 32 x 64 93.2 vs 103.1 (1.11x); --bf16 (both sides under CPU bf16 autocast) 8 x 32
14.41 vs 21.65 (1.50x), 32 x 64 66.8 vs 89.7 (1.34x): TRL runs slower with bf16 at 8 x 32.
2026-11-27, with our AdamW fused as TRL's is (--bf16): 8 x 32 15.26 vs 19.84 (1.30x), RSS 6.77
vs 8.50 GB (0.80x); 32 x 64 69.05 vs 93.22 (1.35x), 13.29 vs 24.10 GB (0.55x): no change beyond
the run-to-run spread.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-ppo"


def ensure_trl_venv() -> Path:
    python = VENV / "bin" / "python"
    if (VENV / ".ready").exists():
        return python
    print(f"creating {VENV} with trl==1.12.0 (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run(
        [
            *pip,
            "transformers",
            "accelerate",
            "datasets",
            "jinja2",
            "safetensors",
            "gguf",
            "platformdirs",
        ],
        check=True,
    )
    subprocess.run([*pip, "--no-deps", "trl==1.12.0"], check=True)
    (VENV / ".ready").write_text("ok")
    return python


def prompts(n: int) -> list[str]:
    from instructrl import data

    return [
        p.prompt
        for p in data.load_prompts("train")
        if isinstance(p.prompt, str) and len(p.prompt) < 200
    ][:n]


def side_ours(args) -> dict:
    import torch

    from instructrl import models
    from instructrl.config import PPOConfig, load_config
    from instructrl.rundir import read_metrics
    from instructrl.stages import ppo

    tmp = Path(args.tmp)
    torch.manual_seed(0)
    rm = models.new_reward_model(args.model)
    models.save_reward_model(rm, models.load_tokenizer(args.model), tmp / "rm", bias=0.0)
    path = tmp / "prompts.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
            for i, p in enumerate(prompts(args.prompts))
        )
    )
    cfg = load_config(
        PPOConfig,
        [
            f"policy={args.model}",
            f"reward={tmp / 'rm'}",
            f"prompts={path}",
            f"out={tmp / 'ppo'}",
            f"iterations={args.iterations}",
            f"batch_size={args.prompts}",
            f"minibatch_size={args.prompts}",
            f"max_new_tokens={args.tokens}",
            "ppo_epochs=1",
            "ptx=none",
            "checkpoint_every=0",
            "warmup_iterations=0",
            "sample_every=0",
            f"rollout.quantize={args.quantize}",
            f"cpu_bf16={str(args.bf16).lower()}",
        ],
    )
    ppo.run(cfg)
    times = [r["ppo/iteration_s"] for r in read_metrics(tmp / "ppo" / "metrics.jsonl")]
    return {"iteration_s": sum(times[1:]) / max(1, len(times) - 1), "all": times}


def side_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    ds = Dataset.from_dict(
        {
            "input_ids": [
                tok.apply_chat_template(
                    [{"role": "user", "content": p}],
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                )
                for p in prompts(args.prompts)
            ]
        }
    )
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    torch.manual_seed(0)
    reward = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=1, dtype=torch.float32
    )
    value = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=1, dtype=torch.float32
    )
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    cfg = PPOConfig(
        output_dir=str(Path(args.tmp) / "trl"),
        per_device_train_batch_size=args.prompts,
        num_mini_batches=1,
        num_ppo_epochs=1,
        response_length=args.tokens,
        total_episodes=args.prompts * args.iterations,
        use_cpu=True,
        bf16=args.bf16,
        report_to=[],
        stop_token="eos",
        local_rollout_forward_batch_size=args.prompts,
        save_strategy="no",
        logging_steps=1,
        num_sample_generations=0,
        temperature=1.0,
        kl_coef=0.02,
    )
    trainer = PPOTrainer(
        args=cfg,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        value_model=value,
        train_dataset=ds,
        callbacks=[Stamp()],
    )
    start = time.perf_counter()
    trainer.train()
    marks = [start, *stamps]
    times = [b - a for a, b in itertools.pairwise(marks)]
    return {"iteration_s": sum(times[1:]) / max(1, len(times) - 1), "all": times}


def run_side(python: Path, side: str, args, prompts_n: int, tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(python),
            __file__,
            "--side",
            side,
            "--tmp",
            tmp,
            "--model",
            args.model,
            "--iterations",
            str(args.iterations),
            "--prompts",
            str(prompts_n),
            "--tokens",
            str(tokens),
            "--quantize",
            args.quantize,
            *(["--bf16"] if args.bf16 else []),
        ]
        env = {**os.environ, "PYTHONPATH": str(HERE.parent), "INSTRUCTRL_PROGRESS": "0"}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument(
        "--model", default=None, help="HF model directory (default: the converted default model)"
    )
    p.add_argument("--side", choices=["ours", "trl"])
    p.add_argument("--tmp")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument(
        "--quantize",
        default="none",
        choices=["none", "auto", "bf16"],
        help="our side's rollout.quantize (bf16: sample from a bfloat16 copy; the PPO ratio and "
        "KL still use the fp32 policy's logprobs, recomputed by one forward)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="both sides train under bf16 autocast on the CPU (ours: cpu_bf16=true, needs "
        "AVX512-BF16 or AMX; TRL: bf16=True); weights and optimizer state stay fp32",
    )
    args = p.parse_args()
    if args.side:
        result = side_ours(args) if args.side == "ours" else side_trl(args)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print("RESULT " + json.dumps(result))
        return
    if args.model is None:
        from instructrl.models import default_model_dir

        args.model = str(default_model_dir())
    trl_python = ensure_trl_venv()
    summary: dict = {"bench": "ppo", "quantize": args.quantize, "bf16": args.bf16}
    print(
        f"{'setting':10s} {'ours s/it':>10s} {'TRL s/it':>10s} {'speed x':>8s} {'ours RSS':>9s} {'TRL RSS':>9s} {'RSS x':>6s}"
    )
    for n, t in ((8, 32), (32, 64)):
        ours = run_side(Path(sys.executable), "ours", args, n, t)
        trl = run_side(trl_python, "trl", args, n, t)
        speed, rss = (
            trl["iteration_s"] / ours["iteration_s"],
            ours["peak_rss_gb"] / trl["peak_rss_gb"],
        )
        print(
            f"{f'{n} x {t}':10s} {ours['iteration_s']:10.2f} {trl['iteration_s']:10.2f} {speed:8.2f} "
            f"{ours['peak_rss_gb']:8.2f}G {trl['peak_rss_gb']:8.2f}G {rss:6.2f}",
            flush=True,
        )
        summary[f"{n}x{t}"] = {
            "ours_s": round(ours["iteration_s"], 2),
            "trl_s": round(trl["iteration_s"], 2),
            "speed_ratio": round(speed, 2),
            "ours_rss_gb": round(ours["peak_rss_gb"], 2),
            "trl_rss_gb": round(trl["peak_rss_gb"], 2),
            "rss_ratio": round(rss, 2),
        }
    summary.update(ratio=summary["8x32"]["speed_ratio"], goal=">= 1.0")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
