"""Background jobs: K outputs per prompt from a chosen model, by `instructrl generate` in a
subprocess (the app process never imports torch). Progress comes from the progress file the
generate stage keeps (`INSTRUCTRL_PROGRESS_FILE`) and lands in the jobs table every second."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from instructrl import records as R
from instructrl.web import crud
from instructrl.web.db import transaction
from instructrl.web.models import Job, Project, now

log = logging.getLogger(__name__)


def start_generation(
    factory: sessionmaker[Session],
    *,
    project_id: int,
    prompts: list[dict[str, Any]],
    params: dict[str, Any],
    jobs_dir: str | Path,
    python: str = "",
) -> int:
    """Create the job row and start its thread; returns the job id."""
    with transaction(factory) as s:
        project = s.get(Project, project_id)
        job = crud.create_job(
            s, project=project, kind="generate", params=params, total=len(prompts) * params["k"]
        )
        job_id = job.id
    work = Path(jobs_dir) / f"job-{job_id}"
    work.mkdir(parents=True, exist_ok=True)
    R.write_records(work / "prompts.jsonl", prompts)
    thread = threading.Thread(
        target=_run, args=(factory, job_id, work, params, python or sys.executable), daemon=True
    )
    thread.start()
    return job_id


def _update(factory: sessionmaker[Session], job_id: int, **fields: Any) -> None:
    with transaction(factory) as s:
        job = s.get(Job, job_id)
        for key, value in fields.items():
            setattr(job, key, value)


def _run(factory, job_id: int, work: Path, params: dict[str, Any], python: str) -> None:
    progress = work / "progress.json"
    out = work / "samples.jsonl"
    command = [
        python, "-m", "instructrl.cli", "-q", "generate",
        f"prompts={work / 'prompts.jsonl'}",
        f"samples={params['k']}",
        f"out={out}",
        f"model={params['model']}",
        f"sampling.temperature={params['temperature']}",
        f"sampling.max_new_tokens={params['max_new_tokens']}",
        "show=0",
    ]  # fmt: skip
    env = {**os.environ, "INSTRUCTRL_PROGRESS_FILE": str(progress)}
    _update(factory, job_id, status="running")
    with open(work / "log.txt", "wb") as logfile:
        proc = subprocess.Popen(command, stdout=logfile, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(1.0)
            _report_progress(factory, job_id, progress)
    if proc.returncode != 0:
        tail = (work / "log.txt").read_text(errors="replace")[-2000:]
        _update(factory, job_id, status="failed", message=tail, finished_at=now())
        return
    try:
        samples = R.read_records(out, "sample")
        with transaction(factory) as s:
            project = s.get(Project, s.get(Job, job_id).project_id)
            added = crud.import_samples(s, project=project, samples=samples)
        _update(
            factory,
            job_id,
            status="done",
            done=len(samples),
            message=f"{added} outputs added",
            finished_at=now(),
        )
    except Exception as e:  # the job row says what went wrong; the server keeps running
        log.exception("job %d failed", job_id)
        _update(factory, job_id, status="failed", message=str(e), finished_at=now())


def _report_progress(factory, job_id: int, progress: Path) -> None:
    try:
        state = json.loads(progress.read_text())
    except (OSError, ValueError):
        return
    _update(factory, job_id, done=int(state.get("done", 0)))
