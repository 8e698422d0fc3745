"""GPU paths, run for real on one GPU: the tiny loop (`instructrl run configs/tiny.yaml`) on
CUDA, with PPO's KL at its first iteration zero (the reference in the policy's dtype); then SFT,
RM and PPO on that run's records under each shipped accelerate config in one process (FSDP full
shard, DeepSpeed ZeRO-2, ZeRO-3). For each check: exit status, seconds, peak GPU memory
(nvidia-smi, CUDA context included) and, on failure, the last error lines.

    python bench/gpu_paths.py [--smoke] [--only NAME,...] [--shape DIR]

--records DIR: a work folder an earlier run left (its tiny-model/ and runs/tiny/): the stage
checks use its records and the loop is not run (the loop's simulated labelers need a MiniLM
package, 83 MB, that a machine without network may not have).
--shape DIR: then PPO on a random-weight model of DIR's config and tokenizer (e.g. the default
model's directory: SmolLM2-135M's shape; random weights are fine for time and memory), with a
reward model built from it: 2 iterations of 64 episodes (minibatch 16, 48 new tokens) in one
process plain and under each DeepSpeed config, each with seconds per iteration and peak memory.

--smoke: the same code on CPU without accelerate configs (checks the script, not the GPU).
DeepSpeed needs `pip install '.[deepspeed]'`; a bare GPU image can take it as wheels (README,
Scale out). Writes $OUT/gpu_paths.json (or /tmp/out) and prints one JSON line per check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SMOKE = "--smoke" in sys.argv
ONLY = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
SHAPE = sys.argv[sys.argv.index("--shape") + 1] if "--shape" in sys.argv else None
RECORDS = sys.argv[sys.argv.index("--records") + 1] if "--records" in sys.argv else None
OUT = Path(os.environ.get("OUT", "/tmp/out"))
WORK = Path(os.environ.get("GPU_PATHS_WORK", "/tmp/gpu_paths"))
TIMEOUT_S = int(os.environ.get("GPU_PATHS_TIMEOUT_S", "150"))


class PeakMemory:
    """Polls nvidia-smi's used memory (MiB) in a thread while a check runs."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                self.peak = max([self.peak, *(int(x) for x in out.split())])
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(0.25)

    def __enter__(self) -> PeakMemory:
        if not SMOKE:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def instructrl(*args: str, config: str | None = None) -> list[str]:
    """The command line for `instructrl ARGS`, under `accelerate launch` with CONFIG if given."""
    if config is None:
        return [sys.executable, "-m", "instructrl.cli", *args]
    return [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(ROOT / "configs" / "accelerate" / config), "--num_processes", "1"),
        *("-m", "instructrl.cli", *args),
    ]


results: dict[str, dict] = {}


def check(name: str, cmd: list[str], expect_fail: str | None = None) -> dict:
    """Run CMD; record status, time and peak memory. EXPECT_FAIL: text of a refusal we expect."""
    if ONLY and not any(name.startswith(o) for o in ONLY):
        return {}
    env = {**os.environ, "INSTRUCTRL_PROGRESS_EVERY": "0", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with PeakMemory() as mem:
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
            rc, err = done.returncode, done.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr or b"").decode(errors="replace")
    row = {"rc": rc, "s": round(time.perf_counter() - start, 1), "peak_mib": mem.peak or None}
    if expect_fail is not None:
        row["ok"] = rc == 1 and expect_fail in err
    else:
        row["ok"] = rc == 0
    if not row["ok"]:
        lines = [x for x in err.splitlines() if x.strip()]
        if "ChildFailedError" in err:  # the launcher's report: the failed process's own lines
            lines = [x for x in lines if x.startswith("[rank")] or lines
        row["error"] = lines[-12:]
    results[name] = row
    print(name, json.dumps(row), flush=True)
    log_file = WORK / f"{name}.stderr"  # names like fsdp/sft: a folder a failed launch never made
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(err)
    return row


def main() -> None:
    import shutil

    from instructrl import rundir
    from instructrl.testing import make_tiny_model

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    if RECORDS:  # an earlier smoke run's model and records: the loop itself is not run here
        shutil.copytree(Path(RECORDS) / "tiny-model", WORK / "tiny-model")
        shutil.copytree(Path(RECORDS) / "runs", WORK / "runs")
        model = WORK / "tiny-model"
    else:
        model = make_tiny_model(WORK / "tiny-model", hidden_size=64)
    try:
        import torch

        results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        results["torch"] = torch.__version__
    except ImportError:
        pass
    # 1. the whole loop in one process on the default device (CUDA where there is one)
    run = WORK / "runs" / "tiny"
    row = (
        check("run", instructrl("run", "configs/tiny.yaml", f"model={model}", f"root={run.parent}"))
        if not RECORDS
        else {}
    )
    if row.get("ok"):
        first = rundir.read_metrics(run / "ppo" / "metrics.jsonl")[0]
        row["ppo_first_kl"] = first.get("ppo/kl")
        row["ok"] = abs(first.get("ppo/kl", 1.0)) < 1e-6
        print("run: PPO's KL at its first iteration", row["ppo_first_kl"], flush=True)
    if not (run / "rm" / "model.safetensors").exists():
        raise SystemExit("the tiny run left no reward model: the stage checks need its records")
    configs = [None] if SMOKE or RECORDS else []
    configs += [] if SMOKE else ["fsdp.yaml"]
    try:  # DeepSpeed runs on CPUs too (its CPU accelerator, gloo)
        import deepspeed  # noqa: F401

        configs += ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml"]
    except ImportError:
        print("deepspeed is not installed: its checks are left out", flush=True)
    for config in configs:
        tag = (config or "plain.yaml").removesuffix(".yaml")
        out = WORK / tag
        common = ["checkpoint_every=1", "val_fraction=0"]
        check(
            f"{tag}/sft",
            instructrl(
                "sft",
                f"model={model}",
                f"data={run / 'demos' / 'train.jsonl'}",
                *common,
                "epochs=1",
                "batch_size=2",
                f"out={out / 'sft'}",
                config=config,
            ),
        )
        check(
            f"{tag}/rm",
            instructrl(
                "rm",
                f"model={model}",
                f"data={run / 'rankings' / 'train.jsonl'}",
                f"demos={run / 'demos' / 'train.jsonl'}",
                *common,
                "epochs=1",
                "batch_size=2",
                "head_only=false",
                f"out={out / 'rm'}",
                config=config,
            ),
        )
        check(
            f"{tag}/ppo",
            instructrl(
                "ppo",
                f"policy={run / 'sft'}",
                f"reward={run / 'rm'}",
                f"out={out / 'ppo'}",
                "iterations=2",
                "batch_size=4",
                "minibatch_size=2",
                "max_new_tokens=8",
                "ptx=none",
                "checkpoint_every=1",
                config=config,
            ),
        )
        if results.get(f"{tag}/ppo", {}).get("ok"):  # the reference equals the policy at first
            first = rundir.read_metrics(out / "ppo" / "metrics.jsonl")[0]
            results[f"{tag}/ppo"]["first_kl"] = first.get("ppo/kl")
    if SHAPE:
        shaped(configs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_paths.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


def shaped(configs: list[str | None]) -> None:
    """PPO iterations on a random-weight model of SHAPE's config: time and peak memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from instructrl import models, rundir

    policy_dir, rm_dir = WORK / "shape-policy", WORK / "shape-rm"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(SHAPE))
    tokenizer = AutoTokenizer.from_pretrained(SHAPE)
    model.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    rm = models.new_reward_model(str(policy_dir), dtype=torch.float32)
    models.save_reward_model(rm, tokenizer, rm_dir, bias=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    results["shape"] = {"config": SHAPE, "parameters": n_params}
    del model, rm
    for config in [c for c in configs if c is None or c.startswith("deepspeed")]:
        tag = "shape/" + (config or "plain.yaml").removesuffix(".yaml")
        out = WORK / tag
        row = check(
            tag,
            instructrl(
                "ppo",
                f"policy={policy_dir}",
                f"reward={rm_dir}",
                f"out={out}",
                "iterations=2",
                "batch_size=64" if not SMOKE else "batch_size=4",
                "minibatch_size=16" if not SMOKE else "minibatch_size=2",
                "max_new_tokens=48" if not SMOKE else "max_new_tokens=4",
                "ptx=none",
                "checkpoint_every=0",
                "freeze_layers=0",
                "share_trunk=false",
                config=config,
            ),
        )
        if row.get("ok"):
            rows = rundir.read_metrics(out / "metrics.jsonl")
            row["iteration_s"] = [round(r["ppo/iteration_s"], 2) for r in rows]
            row["first_kl"] = rows[0].get("ppo/kl")
            print(tag, "seconds per iteration", row["iteration_s"], flush=True)


if __name__ == "__main__":
    main()
