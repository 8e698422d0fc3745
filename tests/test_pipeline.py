"""`instructrl run` end to end on a tiny random model: outputs validate, a rerun skips every
stage, a changed RM config reruns RM, PPO and eval only, and a SIGKILLed stage resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instructrl import models
from instructrl.records import read_records
from instructrl.rundir import read_metrics

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def run_cli(*args: str, env_extra: dict | None = None) -> str:
    env = {**os.environ, "INSTRUCTRL_PROGRESS": "0", "COLUMNS": "200", **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "instructrl.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def statuses(log: str) -> dict[str, str]:
    return {
        m.group(2): m.group(1) for m in re.finditer(r"^(skip|run|resume) (\S+)", log, re.MULTILINE)
    }


def summary_chunks(run_dir):
    from omegaconf import OmegaConf

    return OmegaConf.load(run_dir / "eval" / "config.yaml").ppl_chunks


@pytest.fixture(scope="module")
def first_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    log = run_cli("run", str(CONFIG), f"model={tiny_model_dir}", f"root={root}")
    return root / "tiny", log, tiny_model_dir, root


def test_every_stage_writes_valid_outputs(first_run):
    run_dir, log, _, _ = first_run
    assert set(statuses(log).values()) == {"run"}
    assert len(read_records(run_dir / "demos" / "train.jsonl", "demonstration")) == 6
    assert {len(s) for s in [read_records(run_dir / "samples" / "rm.jsonl", "sample")]} == {
        18
    }  # 6 prompts x K = 3
    comps = read_records(run_dir / "rankings" / "train.jsonl", "comparison")
    assert {c.k for c in comps} == {3} and all(c.labeler.startswith("train-") for c in comps)
    assert {
        c.labeler.split("-")[0]
        for c in read_records(run_dir / "rankings" / "heldout.jsonl", "comparison")
    } == {"heldout"}
    models.load_reward_model(run_dir / "rm")
    for stage in ("sft", "ppo", "ppo-ptx"):
        assert (run_dir / stage / "model.safetensors").is_file()
        assert json.loads((run_dir / stage / "manifest.json").read_text())["complete"] is True
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert set(summary["win_rates"]) == {"base", "ppo", "ptx"} and summary["baseline"] == "sft"
    assert (run_dir / "eval" / "report.html").is_file()
    # the diagnostics: best-of-K, RM accuracy with its interval, over-optimisation from every
    # PPO episode, identical text, paired NLL differences, the machine
    assert summary["best_of"]["k"] == 4 and {"rm", "panel"} <= set(summary["best_of"])
    assert summary["best_of"]["rm"]["n"] == 3  # eval.best_of_prompts of the test prompts
    best_of_rows = (run_dir / "eval" / "generations").glob("sft-best-of-4-*.jsonl")
    assert [len(read_records(p, "sample")) for p in best_of_rows] == [3 * 3]  # K - 1 more
    assert summary["rm"]["accuracy"]["prompts"] == 3 and "by_category" in summary["rm"]["accuracy"]
    episodes = read_metrics(run_dir / "ppo" / "rollouts.jsonl")
    assert len(episodes) == 2 * 4  # iterations x batch_size
    assert {e["finish_reason"] for e in episodes} <= {"eos", "length", "stop"}
    assert sum(p["n"] for p in summary["overoptimization"]["ppo"]) == len(episodes)
    assert {"ptx vs sft", "ptx vs ppo"} <= set(summary["identical"])
    assert summary["alignment_tax"]["ppo - ptx"]["n"] == summary_chunks(run_dir)
    assert summary["environment"]["cpus"] >= 1
    manifest = json.loads((run_dir / "rm" / "manifest.json").read_text())
    assert {"config", "inputs", "versions", "wall_s", "figures", "key"} <= set(manifest)


def test_rerun_skips_and_rm_change_reruns_downstream_only(first_run):
    _, _, tiny, root = first_run
    log = run_cli("run", str(CONFIG), f"model={tiny}", f"root={root}")
    assert set(statuses(log).values()) == {"skip"}
    log = run_cli("run", str(CONFIG), f"model={tiny}", f"root={root}", "rm.lr=2e-3")
    got = statuses(log)
    assert {k for k, v in got.items() if v == "run"} == {"rm", "ppo", "ppo-ptx", "eval"}
    assert {k for k, v in got.items() if v == "skip"} == {"demos", "sft", "samples", "rankings"}


def test_sigkilled_stage_resumes(tiny_model_dir, tmp_path):
    args = [
        sys.executable,
        "-m",
        "instructrl.cli",
        "run",
        str(CONFIG),
        f"model={tiny_model_dir}",
        f"root={tmp_path}",
        "sft.max_steps=30",
    ]
    env = {**os.environ, "INSTRUCTRL_PROGRESS": "0"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    checkpoint = tmp_path / "tiny" / "sft" / "checkpoints"
    deadline = time.time() + 120

    def saved_steps() -> list[int]:  # keep_last=1: a step-N lives only until step N+1 is saved
        return [int(p.name.split("-")[1]) for p in checkpoint.glob("step-*")]

    while time.time() < deadline and proc.poll() is None and max(saved_steps(), default=0) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert saved_steps(), f"no checkpoint appeared before the kill: {err.decode()[-2000:]}"
    assert not json.loads((tmp_path / "tiny" / "sft" / "manifest.json").read_text())["complete"]
    saved = max(saved_steps())
    metrics = tmp_path / "tiny" / "sft" / "metrics.jsonl"
    before = [
        line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= saved
    ]
    log = run_cli(
        "run", str(CONFIG), f"model={tiny_model_dir}", f"root={tmp_path}", "sft.max_steps=30"
    )
    got = statuses(log)
    assert got["demos"] == "skip" and got["sft"] == "resume" and got["eval"] == "run"
    after = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= saved]
    assert (
        after == before
    )  # steps up to the checkpoint were not redone (their timings would differ)
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "tiny" / "sft" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps[-1] == 30 and len([s for s in steps if s > 0]) == len({s for s in steps if s > 0})


@pytest.mark.parametrize("name", ["default.yaml", "laptop-long.yaml", "paper.yaml", "tiny.yaml"])
def test_shipped_run_configs_build_every_stage(name):
    from omegaconf import OmegaConf

    from instructrl.config import RunConfig, load_config
    from instructrl.pipeline import check_sections

    cfg = load_config(RunConfig, [str(CONFIG.parent / name)])
    built = check_sections(cfg)
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG.parent / name))
    # every value a shipped section sets lands in that stage's typed config (ptx over ppo)
    for section, stage in (("sft", "sft"), ("rm", "rm"), ("ppo", "ppo"), ("eval", "eval")):
        for key, value in (raw.get(section) or {}).items():
            if not isinstance(value, dict):
                assert getattr(built[stage], key) == value, (name, section, key)
    for key, value in {**(raw.get("ppo") or {}), **(raw.get("ptx") or {})}.items():
        assert getattr(built["ptx"], key) == value, (name, "ptx", key)
    assert built["ppo"].ptx == "none" and built["ptx"].ptx != "none"
    assert built["rm"].model.endswith("sft") and built["ppo"].reward.endswith("rm")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ppo.lrr=1e-5", "unknown key 'ppo.lrr' for ppo"),
        ("ptx.ptx_coeff=2", "unknown key 'ptx.ptx_coeff' for ppo"),
        ("rm.batch_size=four", "rm.batch_size: expected int, got 'four'"),
        ("eval.limit=-", "eval.limit: expected int"),
        ("sft.val_fraction=2", "config: sft: val_fraction: expected 0 <= x < 1, got 2.0"),
    ],
)
def test_a_mistyped_stage_key_fails_before_any_stage_runs(tmp_path, override, message):
    from instructrl import pipeline
    from instructrl.config import RunConfig, load_config
    from instructrl.errors import ConfigError

    cfg = load_config(RunConfig, [str(CONFIG), f"root={tmp_path}", override])
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipeline.run(cfg)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "tiny").exists()  # nothing was written, no stage ran


def test_second_round_and_web_app_feedback(first_run, tmp_path):
    run_dir, _, tiny, root = first_run
    log = run_cli("run", str(CONFIG), f"model={tiny}", f"root={root}", "rounds=2", "rm.lr=2e-3")
    got = statuses(log)
    assert {got[s] for s in ("samples-r2", "rankings-r2", "rm-r2", "ppo-ptx-r2")} == {"run"}
    r1 = len(read_records(run_dir / "rankings" / "train.jsonl", "comparison"))
    r2 = read_records(run_dir / "rankings-r2" / "train.jsonl", "comparison")
    assert len(r2) == 2 * r1  # round 2 adds to the comparisons so far
    policies = json.loads((run_dir / "eval" / "summary.json").read_text())["policies"]
    assert policies["ptx"].endswith("ppo-ptx-r2")
    # the same loop on exported records instead of the panel
    export = tmp_path / "export"
    export.mkdir()
    (export / "demonstrations.jsonl").write_text((run_dir / "demos" / "train.jsonl").read_text())
    (export / "comparisons.jsonl").write_text((run_dir / "rankings" / "train.jsonl").read_text())
    (export / "heldout").mkdir()
    (export / "heldout" / "comparisons.jsonl").write_text(
        (run_dir / "rankings" / "heldout.jsonl").read_text()
    )
    log = run_cli("run", str(CONFIG), f"model={tiny}", f"root={tmp_path}", f"feedback={export}")
    got = statuses(log)
    assert (
        "demos" not in got and "rankings" not in got and got["rm"] == "run" and got["eval"] == "run"
    )
    (metrics,) = tmp_path.glob("*/rm/metrics.jsonl")  # held-out labelers: accuracy only
    assert any("rm/heldout_accuracy" in json.loads(x) for x in metrics.read_text().splitlines())


def test_partition_is_disjoint_and_the_eval_subset_spans_categories():
    from collections import Counter

    from instructrl.config import RunConfig, load_config
    from instructrl.pipeline import partition

    parts = partition(load_config(RunConfig, []))
    ids = {name: {p.id for p in ps} for name, ps in parts.items()}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    categories = Counter(p.category for p in parts["test"])
    assert len(categories) >= 6 and categories["generation"] < 0.7 * len(parts["test"])
