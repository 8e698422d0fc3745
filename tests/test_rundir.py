"""rundir.py: metrics rows kept or truncated on resume, checkpoints pruned and found, finished
model directories installed with their marker written last."""

from __future__ import annotations

import json

import torch

from instructrl import rundir


def test_metrics_log_truncates_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = rundir.MetricsLog(path)
    for step in range(1, 5):
        log.write({"step": step, "loss": 1 / 3})
    assert rundir.read_metrics(path)[0] == {"step": 1, "loss": 0.333333}  # floats rounded
    rundir.MetricsLog(path, truncate_after_step=2)  # resumed from the step-2 checkpoint
    assert [r["step"] for r in rundir.read_metrics(path)] == [1, 2]
    rundir.MetricsLog(path)  # a fresh run starts an empty file
    assert rundir.read_metrics(path) == []
    assert rundir.read_metrics(tmp_path / "absent.jsonl") == []


def test_checkpoints_keep_the_last_and_find_the_newest(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 1))
    checkpoints = rundir.Checkpointer(tmp_path, keep_last=2)
    assert checkpoints.latest() is None
    for step in (2, 4, 10):
        with torch.no_grad():
            model.weight.fill_(step)
        checkpoints.save(accelerator, {"step": step})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-10", "step-4"]  # step-10 sorts by number, not by text
    (tmp_path / "checkpoints" / "step-12").mkdir()  # cut short: no state file, not a checkpoint
    latest = checkpoints.latest()
    assert latest.name == "step-10"
    with torch.no_grad():
        model.weight.fill_(0)
    assert checkpoints.load(accelerator, latest) == {"step": 10}
    assert model.weight.detach().eq(10).all()


def test_install_moves_files_and_writes_the_marker_last(tmp_path):
    out, source = tmp_path / "out", tmp_path / "out" / ".final"
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    (out / "sub").mkdir()
    (out / "sub" / "old.txt").write_text("old")
    source.mkdir()
    (source / "model.safetensors").write_text("weights")
    (source / "sub").mkdir()
    (source / "sub" / "new.txt").write_text("new")
    rundir.install(source, out, "selected.json", json.dumps({"step": 3}))
    assert (out / "model.safetensors").read_text() == "weights"
    assert [p.name for p in (out / "sub").iterdir()] == ["new.txt"]  # replaced, not merged
    assert not source.exists() and not (out / "checkpoints").exists()
    assert json.loads((out / "selected.json").read_text()) == {"step": 3}
