"""progress.py: the progress file another process watches (the web app's generation jobs)."""

from __future__ import annotations

import json

from instructrl.progress import progress_bar


def test_progress_file_follows_the_loop(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("INSTRUCTRL_PROGRESS_FILE", str(path))
    seen = []
    with progress_bar("generate", total=5) as update:
        update(2, tokens_per_s=12.5)
        seen.append(json.loads(path.read_text()))
        update(3)
        seen.append(json.loads(path.read_text()))
    assert seen == [
        {"description": "generate", "done": 2, "total": 5},
        {"description": "generate", "done": 5, "total": 5},
    ]
    assert not (tmp_path / "progress.json.tmp").exists()  # replaced atomically


def test_no_progress_file_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("INSTRUCTRL_PROGRESS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    with progress_bar("x", total=1) as update:
        update(1, loss=0.5)
    assert list(tmp_path.iterdir()) == []


def test_plain_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("INSTRUCTRL_PROGRESS", "1")
    monkeypatch.setenv("INSTRUCTRL_PROGRESS_EVERY", "0")
    with progress_bar("samples", total=4) as update:
        update(1, tokens_per_s=80.0)
        update(3, tokens_per_s=90.0)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the last update's line is not repeated at the end
    assert lines[0].startswith("samples: 1/4 (25 %) tokens_per_s 80,")
    assert lines[1].startswith("samples: 4/4 (100 %) tokens_per_s 90,") and "eta 0 s" in lines[1]
    monkeypatch.setenv("INSTRUCTRL_PROGRESS", "0")
    with progress_bar("quiet", total=1) as update:
        update(1)
    assert capsys.readouterr().err == ""


def test_timed_logs_the_phase_and_its_seconds(caplog, monkeypatch):
    import logging

    from instructrl import progress

    clock = iter([10.0, 12.5])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    log = logging.getLogger("instructrl.test")
    with caplog.at_level(logging.INFO, logger="instructrl.test"), progress.timed(log, "rm scores"):
        pass
    assert [r.getMessage() for r in caplog.records] == ["rm scores: 2.5 s"]
