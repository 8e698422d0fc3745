"""GPU paths, run for real on one GPU: the tiny loop (`instructrl run configs/tiny.yaml`) on
CUDA, with PPO's KL at its first iteration zero (the reference in the policy's dtype); then SFT,
RM and PPO on that run's records under each shipped accelerate config in one process (FSDP full
shard, DeepSpeed ZeRO-2, ZeRO-3). For each check: exit status, seconds, peak GPU memory
(nvidia-smi, CUDA context included) and, on failure, the last error lines.

    python bench/gpu_paths.py [--smoke] [--only NAME,...]

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
    model = make_tiny_model(WORK / "tiny-model", hidden_size=64)
    try:
        import torch

        results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        results["torch"] = torch.__version__
    except ImportError:
        pass
    # 1. the whole loop in one process on the default device (CUDA where there is one)
    run = WORK / "runs" / "tiny"
    row = check(
        "run", instructrl("run", "configs/tiny.yaml", f"model={model}", f"root={run.parent}")
    )
    if row.get("ok"):
        first = rundir.read_metrics(run / "ppo" / "metrics.jsonl")[0]
        row["ppo_first_kl"] = first.get("ppo/kl")
        row["ok"] = abs(first.get("ppo/kl", 1.0)) < 1e-6
        print("run: PPO's KL at its first iteration", row["ppo_first_kl"], flush=True)
    if not (run / "rm" / "model.safetensors").exists():
        raise SystemExit("the tiny run left no reward model: the stage checks need its records")
    configs = [None] if SMOKE else ["fsdp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml"]
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
        deepspeed = config is not None and config.startswith("deepspeed")
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
            expect_fail="under DeepSpeed: not supported yet" if deepspeed else None,
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_paths.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
