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
