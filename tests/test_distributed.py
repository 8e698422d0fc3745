"""Two processes on CPU (gloo, launched with torchrun) against one: the same losses and weights
for SFT and RM steps and a PPO update, an uneven last step that neither hangs nor drops examples, outputs
written once, and PPO drawing disjoint prompts on each process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instructrl import rundir

TIMEOUT_S = 300  # a hang (ranks out of step in a collective) fails here instead of blocking CI


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ACCELERATE_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"


def launch(
    processes: int, *args: str, script: str | None = None, config: str | None = None
) -> subprocess.CompletedProcess:
    """`instructrl ARGS` (or `python SCRIPT ARGS`) in `processes` processes (torchrun when
    more than one; `accelerate launch` with the shipped accelerate CONFIG when given)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INSTRUCTRL_PROGRESS_EVERY": "0"}
    head = [sys.executable]
    if config is not None:
        head += [
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ACCELERATE_CONFIGS / config),
        ]
        head += [f"--num_processes={processes}", f"--main_process_port={_port()}"]
        head += ["--num_cpu_threads_per_process=1"]
    elif processes > 1:
        head += [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            f"--master_port={_port()}",
        ]
    program = [script] if script else (["--module"] if config else ["-m"]) + ["instructrl.cli"]
    try:
        done = subprocess.run(
            [*head, *program, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{processes} processes hung for {TIMEOUT_S} s: {e.stderr}")
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert done.returncode == 0, "\n".join(errors[-20:]) + "\n...\n" + done.stderr[-2000:]
    return done


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "demos.jsonl"
    rows = [
        {"prompt": f"Say hi number {i}.", "response": f"Hi there, number {i}! The quick brown fox."}
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_two_processes_equal_one_with_an_uneven_last_step(tiny_model_dir, demos, tmp_path):
    # 10 examples in micro-batches of 2 = 5 micro-batches. One process, 4 a step: steps of 4
    # and 1. Two processes, 2 each a step: the same steps, and in the last one the second
    # process has no batch (it runs its backward passes at weight 0 instead of hanging).
    common = [f"model={tiny_model_dir}", f"data={demos}", "batch_size=2", "epochs=1"]
    common += ["val_fraction=0", "lr=1e-2", "checkpoint_every=0"]
    launch(1, "sft", *common, "grad_accum=4", f"out={tmp_path / 'one'}")
    launch(2, "sft", *common, "grad_accum=2", f"out={tmp_path / 'two'}")
    diff = max_diff(tmp_path / "one" / "model.safetensors", tmp_path / "two" / "model.safetensors")
    assert diff < 1e-5, f"weights differ by {diff:.3g}"
    one, two = (rundir.read_metrics(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert [r["step"] for r in two] == [0, 1, 2]  # written once, by the main process
    for key in ("sft/loss", "sft/grad_norm", "sft/lr"):
        assert [r.get(key) for r in two] == pytest.approx([r.get(key) for r in one], abs=1e-5)
    assert one[0]["sft/train_examples"] == two[0]["sft/train_examples"] == 10


def launch_and_kill(processes: int, *args: str, out: Path, config: str | None = None) -> int:
    """Start `instructrl ARGS` as `launch` does, SIGKILL every process of it once `out` holds a
    checkpoint, and return the last step its metrics logged."""
    import signal
    import time

    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1", "INSTRUCTRL_PROGRESS_EVERY": "0"}
    if config is None:
        head = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
        head += [f"--master_port={_port()}", "-m"]
    else:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        head += [str(ACCELERATE_CONFIGS / config), f"--num_processes={processes}"]
        head += [f"--main_process_port={_port()}", "--num_cpu_threads_per_process=1", "--module"]
    proc = subprocess.Popen(
        [*head, "instructrl.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not list((out / "checkpoints").glob(f"*/{rundir.STATE_FILE}")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    # torchrun (also under accelerate launch) starts each worker in a session of its own, so
    # killing the launcher's process group would leave the workers running on, finishing the
    # run that the resumed one should redo: kill each process
    victims = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(victims) > processes, f"expected the launcher and {processes} workers: {victims}"
    for p in victims:
        p.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(victims, timeout=30)
    assert not (out / "model.safetensors").exists()  # killed mid-run, not finished
    return rundir.read_metrics(out / "metrics.jsonl")[-1]["step"]


def assert_resumed(done: subprocess.CompletedProcess, killed_at: int) -> None:
    """The run logged that it resumed from a checkpoint at or before `killed_at`."""
    said = " ".join(done.stderr.split())  # rich wraps long log lines
    steps = [int(n) for n in re.findall(r"resumed from .*?\((?:step|iteration) (\d+) of", said)]
    assert steps and 0 < steps[0] <= killed_at, said[-2000:]  # not started afresh


def test_sft_in_two_processes_killed_and_resumed_equals_a_straight_run(
    tiny_model_dir, demos, tmp_path
):
    """SIGKILL the whole 2-process run once a checkpoint exists, resume it in 2 processes:
    the same weights and metrics rows as a run never killed (both ranks' data positions and
    RNG states come back from the checkpoint)."""
    common = [f"model={tiny_model_dir}", f"data={demos}", "batch_size=1", "epochs=30"]
    common += ["val_fraction=0", "lr=1e-3", "checkpoint_every=10", "dropout=0.1"]
    launch(2, "sft", *common, f"out={tmp_path / 'straight'}")
    out = tmp_path / "killed"
    killed_at = launch_and_kill(2, "sft", *common, f"out={out}", out=out)
    assert_resumed(launch(2, "sft", *common, f"out={out}", "resume=true"), killed_at)
    diff = max_diff(tmp_path / "straight" / "model.safetensors", out / "model.safetensors")
    assert diff < 1e-5, f"killed at step {killed_at} and resumed: weights differ by {diff:.3g}"
    straight, resumed = (
        rundir.read_metrics(p / "metrics.jsonl") for p in (tmp_path / "straight", out)
    )
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]  # no row twice or lost
    assert [r.get("sft/loss") for r in resumed] == pytest.approx(
        [r.get("sft/loss") for r in straight], abs=1e-5
    )


def test_rm_two_processes_equal_one(tiny_model_dir, demos, tmp_path):
    responses = ["Paris.", "It is Paris, in France.", "London.", "I do not know, sorry."]
    comps = [
        {
            "prompt_id": f"p{i}",
            "prompt": f"Question {i}?",
            "responses": responses,
            "ranking": [0, 1, 2, 3],
        }
        for i in range(8)
    ]
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in comps))
    common = [f"model={tiny_model_dir}", f"data={data}", f"demos={demos}", "batch_size=2"]
    common += ["epochs=1", "val_fraction=0", "lr=1e-3", "head_only=false", "checkpoint_every=0"]
    launch(1, "rm", *common, "grad_accum=2", f"out={tmp_path / 'one'}")
    launch(2, "rm", *common, "grad_accum=1", f"out={tmp_path / 'two'}")
    for name in ("model.safetensors",):  # backbone and score head
        diff = max_diff(tmp_path / "one" / name, tmp_path / "two" / name)
        assert diff < 1e-5, f"{name}: weights differ by {diff:.3g}"
    bias = [
        json.loads((tmp_path / d / "selected.json").read_text())["bias"] for d in ("one", "two")
    ]
    assert bias[0] == pytest.approx(bias[1], abs=1e-5)
    one, two = (rundir.read_metrics(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert [r["step"] for r in two] == [r["step"] for r in one]
    assert [r.get("rm/loss") for r in two] == pytest.approx(
        [r.get("rm/loss") for r in one], abs=1e-5
    )


def write_prompts(tmp_path: Path) -> Path:
    """8 prompts p0..p7."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Say hi {i}."}) + "\n" for i in range(8))
    )
    return prompts


def test_ppo_processes_draw_disjoint_prompts(tiny_model_dir, rm_dir, tmp_path):
    rm, prompts = rm_dir, write_prompts(tmp_path)
    out = tmp_path / "ppo"
    launch(
        2,
        "ppo",
        f"policy={tiny_model_dir}",
        f"reward={rm}",
        f"prompts={prompts}",
        f"out={out}",
        "batch_size=4",
        "minibatch_size=2",
        "max_new_tokens=4",
        "iterations=2",
        "ptx=none",
        "checkpoint_every=0",
    )
    rows = rundir.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # one row an iteration, not one per process
    episodes = rundir.read_metrics(out / "rollouts.jsonl")
    by_step = {s: [e["prompt_id"] for e in episodes if e["step"] == s] for s in (1, 2)}
    # 4 episodes an iteration over both processes, each prompt once: the processes' shares
    # are disjoint, and the two iterations cover all 8 prompts of the epoch
    assert all(len(ids) == len(set(ids)) == 4 for ids in by_step.values())
    assert sorted(by_step[1] + by_step[2]) == sorted(f"p{i}" for i in range(8))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


def test_ppo_update_in_two_processes_equals_one(tiny_model_dir, tmp_path):
    """A PPO update (2 epochs over one minibatch, rollout fixed) with each of 2 processes
    holding half the episodes gives the weights of one process holding them all: the shares
    hold different numbers of response tokens, so this needs the loss divided by the global
    token count and advantages whitened over both processes."""
    worker = str(Path(__file__).parent / "ppo_update_worker.py")
    launch(1, str(tiny_model_dir), str(tmp_path / "one"), script=worker)
    launch(2, str(tiny_model_dir), str(tmp_path / "two"), script=worker)
    one = json.loads((tmp_path / "one" / "stats.json").read_text())
    two = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert sum(two["tokens"]) != sum(one["tokens"]) / 2  # uneven shares: the case that matters
    for name in ("policy", "value"):
        diff = max_diff(
            tmp_path / "one" / f"{name}.safetensors", tmp_path / "two" / f"{name}.safetensors"
        )
        assert diff < 1e-5, f"{name}: weights differ by {diff:.3g}"


def test_run_in_two_processes_writes_each_output_once(tiny_model_dir, tmp_path):
    config = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    runs = {}
    for n in (1, 2):
        done = launch(n, "run", str(config), f"model={tiny_model_dir}", f"root={tmp_path / str(n)}")
        runs[n] = tmp_path / str(n) / "tiny"
        assert done.stderr.count("headline figures") == 1  # one summary, not one per process
        assert len(re.findall(r"^run (\S+)", done.stderr, re.MULTILINE)) == 8  # each stage once
    for stage in ("demos", "sft", "samples", "rankings", "rm", "ppo", "ppo-ptx", "eval"):
        one, two = (sorted(p.name for p in (runs[n] / stage).iterdir()) for n in (1, 2))
        assert one == two, stage  # the same files
        manifest = json.loads((runs[2] / stage / "manifest.json").read_text())
        assert manifest["complete"] is True
    for name in ("sft/metrics.jsonl", "rm/metrics.jsonl"):  # half the steps with 2 processes
        steps = [r["step"] for r in rundir.read_metrics(runs[2] / name)]
        assert steps == sorted(set(steps)) and steps[-1] >= 1, name  # no row twice
    for name in ("ppo/metrics.jsonl", "ppo/rollouts.jsonl"):  # batch_size counts all processes
        one, two = (rundir.read_metrics(runs[n] / name) for n in (1, 2))
        assert [r["step"] for r in two] == [r["step"] for r in one], name
    from instructrl.records import read_records

    # the same demonstrations; the later records differ in content (2 processes take half the
    # SFT steps of one) but not in kind or number
    assert read_records(runs[2] / "demos/train.jsonl", "demonstration") == read_records(
        runs[1] / "demos/train.jsonl", "demonstration"
    )
    for name, kind in (("samples/rm.jsonl", "sample"), ("rankings/train.jsonl", "comparison")):
        assert len(read_records(runs[2] / name, kind)) == len(read_records(runs[1] / name, kind))
    assert (runs[2] / "eval" / "report.html").is_file()


def three_way_rankings(path: Path) -> Path:
    """Four prompts, each with three ranked responses."""
    rows = [
        {
            "prompt": f"Q {i}?",
            "responses": ["Yes.", "No, never.", "Maybe so."],
            "ranking": [0, 1, 2],
        }
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def needs_deepspeed() -> None:
    pytest.importorskip(
        "deepspeed", reason="DeepSpeed is not installed (make install installs it, CPU build)"
    )


@pytest.mark.parametrize("config", ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
def test_sft_under_deepspeed_with_grad_accum_and_an_uneven_last_step_equals_one_plain_process(
    config, tiny_model_dir, demos, tmp_path
):
    """SFT under DeepSpeed with gradient accumulation: its engine accumulates until the step's
    last backward (marked through accelerate's sync_gradients) and steps once; 2 processes with
    2 micro-batches a step, the second with none in the last step, give one plain process's
    weights and losses (micro-batches of 2, 4 a step: as in the plain 2-process test)."""
    needs_deepspeed()
    common = [f"model={tiny_model_dir}", f"data={demos}", "batch_size=2", "epochs=1"]
    common += ["val_fraction=0", "lr=1e-2", "checkpoint_every=0", "bf16=false"]
    launch(1, "sft", *common, "grad_accum=4", f"out={tmp_path / 'one'}")
    launch(2, "sft", *common, "grad_accum=2", f"out={tmp_path / 'ds'}", config=config)
    diff = max_diff(tmp_path / "one" / "model.safetensors", tmp_path / "ds" / "model.safetensors")
    assert diff < 1e-5, f"weights differ by {diff:.3g}"
    one, ds = (rundir.read_metrics(tmp_path / d / "metrics.jsonl") for d in ("one", "ds"))
    assert [r["step"] for r in ds] == [r["step"] for r in one]
    assert [r.get("sft/loss") for r in ds] == pytest.approx(
        [r.get("sft/loss") for r in one], abs=1e-5
    )


@pytest.mark.parametrize("config", ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
def test_rm_under_deepspeed_in_two_processes_equals_one_plain_process(
    config, tiny_model_dir, demos, tmp_path
):
    """The RM fine-tuned under DeepSpeed (its CPU accelerator, gloo) in 2 processes: the same
    losses and saved weights as one plain process with the whole batch. Under ZeRO-3 the
    backbone loads as shards while the score head does not (an H200 run stopped on their
    mixed dtypes), and the saved weights are gathered from the shards."""
    needs_deepspeed()
    responses = ["Paris.", "It is Paris, in France.", "London.", "I do not know, sorry."]
    comps = [
        {"prompt_id": f"p{i}", "prompt": f"Q {i}?", "responses": responses, "ranking": [0, 1, 2, 3]}
        for i in range(8)
    ]
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in comps))
    common = [f"model={tiny_model_dir}", f"data={data}", f"demos={demos}", "batch_size=2"]
    common += ["epochs=1", "val_fraction=0", "lr=1e-3", "head_only=false", "checkpoint_every=0"]
    common += ["bf16=false"]  # fp32 on both sides (the shipped DeepSpeed configs ask for bf16)
    launch(1, "rm", *common, "grad_accum=2", f"out={tmp_path / 'one'}")
    launch(2, "rm", *common, "grad_accum=1", f"out={tmp_path / 'ds'}", config=config)
    diff = max_diff(tmp_path / "one" / "model.safetensors", tmp_path / "ds" / "model.safetensors")
    assert diff < 1e-5, f"weights differ by {diff:.3g}"
    one, ds = (rundir.read_metrics(tmp_path / d / "metrics.jsonl") for d in ("one", "ds"))
    assert [r.get("rm/loss") for r in ds] == pytest.approx(
        [r.get("rm/loss") for r in one], abs=1e-5
    )


def test_policy_weight_ema_under_zero3_averages_each_partition(tiny_model_dir, tmp_path):
    """ema_decay under ZeRO-3: each process averages its own partition of every trainable
    weight; after one update with decay 0.5 the output is (initial + updated) / 2 of one plain
    process's update, and the EMA's state, gathered whole and sliced back, round-trips."""
    needs_deepspeed()
    worker = str(Path(__file__).parent / "ppo_update_worker.py")
    settings = ["grad_clip=0", "lr=1e-3", "value_lr=1e-3", "bf16=false"]
    launch(1, str(tiny_model_dir), str(tmp_path / "one"), *settings, script=worker)
    launch(
        2,
        str(tiny_model_dir),
        str(tmp_path / "ema"),
        *settings,
        "ema_decay=0.5",
        script=worker,
        config="deepspeed-zero3.yaml",
    )
    initial = load_file(tiny_model_dir / "model.safetensors")
    updated = load_file(tmp_path / "one" / "policy.safetensors")
    ema = load_file(tmp_path / "ema" / "policy.safetensors")
    moved = [k for k in ema if k in initial and not torch.equal(updated[k], initial[k])]
    assert moved, "the update changed nothing: the test would prove nothing"
    diff = max(
        ((initial[k] + updated[k]) / 2 - ema[k]).abs().max().item() for k in ema if k in initial
    )
    assert diff < 1e-5, f"EMA weights differ from (initial + updated) / 2 by {diff:.3g}"
    state = load_file(tmp_path / "ema" / "ema_state.safetensors")
    assert moved[0] in state and state.keys() <= ema.keys()  # the trainable weights, whole
    assert max((state[k] - ema[k]).abs().max().item() for k in state) == 0.0


@pytest.mark.parametrize("config", ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
def test_ppo_update_under_deepspeed_in_two_processes_equals_one_plain_process(
    config, tiny_model_dir, tmp_path
):
    """PPO under DeepSpeed: policy and value in one engine (one backward of both losses, one
    AdamW with a parameter group each), the reference as a DeepSpeed inference engine (ZeRO-3:
    shards), sampling from a gathered copy under ZeRO-3. In 2 processes with half the episodes
    each it gives the weights of one plain process holding them all (grad_clip=0: DeepSpeed
    clips over both models at once)."""
    needs_deepspeed()
    worker = str(Path(__file__).parent / "ppo_update_worker.py")
    # DeepSpeed clips policy and value together (one engine): no clipping on either side, and
    # a smaller step, so that all-reduce rounding stays below 1e-5 in unclipped Adam steps
    settings = ["grad_clip=0", "lr=1e-3", "value_lr=1e-3", "bf16=false"]
    launch(1, str(tiny_model_dir), str(tmp_path / "one"), *settings, script=worker)
    launch(2, str(tiny_model_dir), str(tmp_path / "ds"), *settings, script=worker, config=config)
    for name in ("policy", "value"):
        diff = max_diff(
            tmp_path / "one" / f"{name}.safetensors", tmp_path / "ds" / f"{name}.safetensors"
        )
        assert diff < 1e-5, f"{name}: weights differ by {diff:.3g}"


def test_rm_head_only_under_deepspeed_zero3_equals_a_plain_process(tiny_model_dir, demos, tmp_path):
    """head_only under ZeRO-3: the frozen backbone's features come from whole weights (loaded
    unpartitioned, no engine), so the fitted head is the plain run's."""
    needs_deepspeed()
    data = three_way_rankings(tmp_path / "c.jsonl")
    args = [f"model={tiny_model_dir}", f"data={data}", f"demos={demos}", "val_fraction=0"]
    args += ["head_only=true", "head_epochs=20", "checkpoint_every=0", "bf16=false"]
    launch(1, "rm", *args, f"out={tmp_path / 'one'}")
    launch(1, "rm", *args, f"out={tmp_path / 'ds'}", config="deepspeed-zero3.yaml")
    diff = max_diff(tmp_path / "one" / "model.safetensors", tmp_path / "ds" / "model.safetensors")
    assert diff < 1e-5, f"weights differ by {diff:.3g}"


def test_rm_under_deepspeed_zero3_in_bf16_trains_and_saves_a_loadable_model(
    tiny_model_dir, demos, tmp_path
):
    """The shipped ZeRO-3 config in bf16: transformers loads the backbone as bf16 shards, the
    score head is built whole in fp32 after it; DeepSpeed's optimizer set-up stopped on those
    mixed dtypes (on an H200) until the head was made a ZeRO parameter too. The saved model
    loads outside DeepSpeed and scores."""
    needs_deepspeed()
    import torch

    from instructrl import models

    data = three_way_rankings(tmp_path / "c.jsonl")
    args = [f"model={tiny_model_dir}", f"data={data}", f"demos={demos}", "batch_size=2"]
    args += ["epochs=1", "val_fraction=0", "head_only=false", "checkpoint_every=0"]
    launch(1, "rm", *args, f"out={tmp_path / 'rm'}", config="deepspeed-zero3.yaml")
    rm = models.load_reward_model(tmp_path / "rm", dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(rm(ids, torch.ones_like(ids))).all()


@pytest.mark.parametrize("config", ["deepspeed-zero3.yaml"])
def test_run_under_deepspeed_in_two_processes_writes_what_one_plain_process_writes(
    config, tiny_model_dir, tmp_path
):
    """`instructrl run` under ZeRO-3 in 2 processes: labeling, sampling and evaluation in the
    main process load their models whole (as shards they would wait for the other process and
    hang), PPO's gathered weights reach the main process only; each stage runs and writes once,
    the same files as a plain run."""
    needs_deepspeed()
    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    launch(1, "run", str(tiny), f"model={tiny_model_dir}", f"root={tmp_path / 'one'}")
    done = launch(
        2, "run", str(tiny), f"model={tiny_model_dir}", f"root={tmp_path / 'ds'}", config=config
    )
    assert done.stderr.count("headline figures") == 1
    assert len(re.findall(r"^run (\S+)", done.stderr, re.MULTILINE)) == 8
    for stage in ("demos", "sft", "samples", "rankings", "rm", "ppo", "ppo-ptx", "eval"):
        one, ds = (
            sorted(p.name for p in (tmp_path / d / "tiny" / stage).iterdir()) for d in ("one", "ds")
        )
        assert one == ds, stage
        manifest = json.loads((tmp_path / "ds" / "tiny" / stage / "manifest.json").read_text())
        assert manifest["complete"] is True


@pytest.mark.parametrize("config", ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
def test_ppo_under_deepspeed_killed_and_resumed_equals_a_straight_run(
    config, tiny_model_dir, rm_dir, tmp_path
):
    """PPO-ptx in 2 DeepSpeed processes, every process SIGKILLed once a checkpoint exists and
    the run resumed: the same weights and episodes as a run never killed (the engine's
    optimizer state, each rank's data position and RNG streams, the KL controller and the
    ptx stream come back from the checkpoint)."""
    needs_deepspeed()
    rm, prompts = rm_dir, write_prompts(tmp_path)
    common = [f"policy={tiny_model_dir}", f"reward={rm}", f"prompts={prompts}", "batch_size=4"]
    common += ["minibatch_size=2", "max_new_tokens=4", "iterations=6", "checkpoint_every=2"]
    common += ["ptx=default", "ptx_batch_size=2", "bf16=false"]
    launch(2, "ppo", *common, f"out={tmp_path / 'straight'}", config=config)
    out = tmp_path / "killed"
    killed_at = launch_and_kill(2, "ppo", *common, f"out={out}", out=out, config=config)
    done = launch(2, "ppo", *common, f"out={out}", "resume=true", config=config)
    assert_resumed(done, killed_at)
    diff = max_diff(tmp_path / "straight" / "model.safetensors", out / "model.safetensors")
    assert diff < 1e-5, f"killed at iteration {killed_at} and resumed: weights differ by {diff:.3g}"
    straight, resumed = (
        [
            (r["step"], r["prompt_id"], r["response"])
            for r in rundir.read_metrics(p / "rollouts.jsonl")
        ]
        for p in (tmp_path / "straight", out)
    )
    assert resumed == straight
