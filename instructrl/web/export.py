"""The feedback database's answers as instructrl records: the files the simulated panel writes
(what `instructrl run feedback=DIR` reads)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from instructrl import records as R
from instructrl.web.crud import Invalid, aware, done_rows
from instructrl.web.models import USER_GROUPS, Project, Prompt


def records(s: Session, *, project: Project, group: str = "training") -> dict[str, list[Any]]:
    """The answers of one labeler group's tasks as instructrl records: the files the
    simulated panel writes.

    demonstrations.jsonl, comparisons.jsonl (ranking best first, ties nested), ratings.jsonl
    (one per output, from rate and rank tasks) and, for the training group, prompts.jsonl
    (prompts labelers wrote). Held-out labelers' answers are exported apart: they judge, they
    do not train (paper, 3.6). Each record carries the labeler's group and the task id."""
    if group not in USER_GROUPS:
        raise Invalid({"group": f"one of {', '.join(USER_GROUPS)}"})
    out: dict[str, list[Any]] = {
        "demonstrations": [],
        "comparisons": [],
        "ratings": [],
        "prompts": [],
    }
    for sub, assignment, task, user in done_rows(s, project, groups=(group,)):
        extra = {
            "labeler_group": task.group,
            "task": task.id,
            "submitted_at": aware(sub.created_at).isoformat(),
        }
        if task.kind == "write_prompt":
            continue
        prompt = assignment.prompt
        record = prompt.record
        if task.kind == "demonstration":
            out["demonstrations"].append(
                R.Demonstration(
                    prompt=record["prompt"],
                    response=sub.payload["response"],
                    prompt_id=prompt.key,
                    labeler=user.username,
                    extra=extra,
                )
            )
            continue
        responses = [o.response for o in prompt.outputs]
        for output, rating in zip(prompt.outputs, sub.payload["ratings"], strict=True):
            out["ratings"].append(
                R.Rating(
                    prompt_id=prompt.key,
                    prompt=record["prompt"],
                    response=output.response,
                    likert=rating["likert"],
                    flags=rating["flags"],
                    labeler=user.username,
                    extra={**extra, "model": output.model},
                )
            )
        if task.kind == "rank":
            # which model wrote each response: `instructrl eval human=...` scores policies by it
            models = [o.model for o in prompt.outputs]
            out["comparisons"].append(
                R.Comparison(
                    prompt=record["prompt"],
                    responses=responses,
                    ranking=sub.payload["ranking"],
                    prompt_id=prompt.key,
                    labeler=user.username,
                    finish_reasons=[o.finish_reason for o in prompt.outputs],
                    extra={**extra, "models": models},
                )
            )
    if group == "training":
        written = s.scalars(
            select(Prompt)
            .where(Prompt.project_id == project.id, Prompt.source == "labeler")
            .order_by(Prompt.id)
        )
        out["prompts"] = [R.Prompt.from_dict(p.record) for p in written]
    return out
