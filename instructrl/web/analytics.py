"""Read-only figures for the admin pages: progress, time per task, labeler agreement (overall,
per group, per labeler, with bootstrap CIs from stats.py), screening scores, recent answers."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from instructrl import records as R
from instructrl.stats import agreement, rank_agreement
from instructrl.web.crud import SCREENING_PASS, aware, done_rows, task_items
from instructrl.web.models import GROUPS, USER_GROUPS, Assignment, Gold, Project, Task


def dashboard(s: Session, *, project: Project) -> dict[str, Any]:
    """Progress per task, time per task, inter-labeler agreement per labeler and overall."""
    tasks = list(s.scalars(select(Task).where(Task.project_id == project.id).order_by(Task.id)))
    rows = done_rows(s, project, groups=GROUPS)
    seconds: dict[int, list[float]] = defaultdict(list)
    for sub, _a, task, _u in rows:
        seconds[task.id].append(sub.seconds)
    by_status: dict[tuple[int, str], int] = {
        (task_id, status): n
        for task_id, status, n in s.execute(
            select(Assignment.task_id, Assignment.status, func.count(Assignment.id)).group_by(
                Assignment.task_id, Assignment.status
            )
        ).all()
    }
    progress = []
    for task in tasks:
        items = len(task_items(s, task=task))
        needed = items * task.per_item
        done = len(seconds[task.id])
        in_progress = by_status.get((task.id, "open"), 0)
        progress.append(
            {
                "task": task,
                "n_items": items,
                "needed": needed,
                "done": done,
                "in_progress": in_progress,
                "open": max(needed - done - in_progress, 0),
                "skipped": by_status.get((task.id, "skipped"), 0),
                "median_s": statistics.median(seconds[task.id]) if seconds[task.id] else None,
            }
        )
    per_user: dict[str, dict[str, Any]] = defaultdict(lambda: {"done": 0, "seconds": []})
    rows = [row for row in rows if row.Task.group in USER_GROUPS]  # labelers, not candidates
    for sub, _assignment, _task, user in rows:
        stats = per_user[user.username]
        stats["done"] += 1
        stats["seconds"].append(sub.seconds)
        stats["group"] = user.group
    overall, by_group, by_user = _agreements(rows)
    labelers = []
    for name, st in sorted(per_user.items()):
        mine = by_user.get(name)
        labelers.append(
            {
                "username": name,
                "group": st["group"],
                "done": st["done"],
                "median_s": statistics.median(st["seconds"]),
                "agreement": mine["agreement"] if mine else None,
                "ci95": mine["ci95"] if mine else None,
                "compared": mine["pairs"] if mine else 0,
            }
        )
    return {
        "progress": progress,
        "labelers": labelers,
        "agreement": overall,
        "agreement_by_group": by_group,
    }


def _agreements(rows) -> tuple[dict | None, dict[str, dict], dict[str, dict]]:
    """Agreement between labelers who ranked the same prompt of a task: overall, per labeler
    group (the paper reports training and held-out labelers apart: 72.6 % and 77.3 %) and per
    labeler (with everyone it shared a prompt with), each with a bootstrap 95 % CI over prompts."""
    by_prompt: dict[tuple[str, int, int], list[tuple[str, list[int]]]] = defaultdict(list)
    for sub, assignment, task, user in rows:
        if task.kind == "rank":
            k = len(assignment.prompt.outputs)
            by_prompt[(task.group, task.id, assignment.item)].append(
                (user.username, R.ranks_of(sub.payload["ranking"], k))
            )
    per_group: dict[str, list[tuple[int, int]]] = defaultdict(list)
    per_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (group, _task, _item), rankings in by_prompt.items():
        total = [0, 0]
        mine: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for x in range(len(rankings)):
            for y in range(x + 1, len(rankings)):
                (ua, ra), (ub, rb) = rankings[x], rankings[y]
                agree, compared = rank_agreement(ra, rb)
                for counts in (total, mine[ua], mine[ub]):
                    counts[0] += agree
                    counts[1] += compared
        if total[1]:
            per_group[group].append((total[0], total[1]))
        for name, (agree, compared) in mine.items():
            if compared:
                per_user[name].append((agree, compared))
    everyone = [x for group_rows in per_group.values() for x in group_rows]
    return (
        agreement(everyone) if everyone else None,
        {group: agreement(r) for group, r in sorted(per_group.items())},
        {name: agreement(r) for name, r in per_user.items()},
    )


def screening_scores(s: Session, *, project: Project) -> list[dict[str, Any]]:
    """Each candidate's agreement with the gold answers: response pairs ordered as the gold
    ranking orders them, and metadata flags equal to the gold flags."""
    gold = {(g.task_id, g.prompt_id): g.payload for g in s.scalars(select(Gold))}
    scores: dict[int, dict[str, Any]] = {}
    for sub, assignment, task, user in done_rows(s, project, groups=("screening",)):
        st = scores.setdefault(
            user.id,
            {
                "user": user,
                "answered": 0,
                "graded": 0,
                "agree": 0,
                "compared": 0,
                "flags_same": 0,
                "flags_total": 0,
            },
        )
        st["answered"] += 1
        answer = gold.get((task.id, assignment.prompt_id))
        if answer is None:
            continue
        st["graded"] += 1
        if task.kind == "rank":
            k = len(assignment.prompt.outputs)
            agree, compared = rank_agreement(
                R.ranks_of(sub.payload["ranking"], k), R.ranks_of(answer["ranking"], k)
            )
            st["agree"] += agree
            st["compared"] += compared
        for mine, theirs in zip(
            sub.payload.get("ratings", []), answer.get("ratings", []), strict=True
        ):
            for flag in R.FLAGS:
                st["flags_total"] += 1
                st["flags_same"] += mine["flags"][flag] == theirs["flags"][flag]
    out = []
    for st in scores.values():
        ranking = st["agree"] / st["compared"] if st["compared"] else None
        flags = st["flags_same"] / st["flags_total"] if st["flags_total"] else None
        parts = [x for x in (ranking, flags) if x is not None]
        score = sum(parts) / len(parts) if parts else None
        out.append(
            {
                **st,
                "ranking_agreement": ranking,
                "flag_agreement": flags,
                "score": score,
                "passed": score is not None and score >= SCREENING_PASS,
            }
        )
    return sorted(out, key=lambda r: r["user"].username)


def recent_submissions(s: Session, *, project: Project, limit: int = 50) -> list[dict[str, Any]]:
    """The newest answers of a project, for admins to review: who, which task, what, how long."""
    rows = done_rows(s, project, groups=GROUPS)[-limit:]
    out = []
    for sub, assignment, task, user in reversed(rows):
        payload = sub.payload
        if task.kind == "write_prompt":
            summary = payload["prompt"]
        elif task.kind == "demonstration":
            summary = payload["response"]
        else:
            likert = ", ".join(str(r["likert"]) for r in payload["ratings"])
            summary = f"Likert {likert}"
            if task.kind == "rank":
                letters = "ABCDEFGHI"
                order = " > ".join(
                    "=".join(letters[i] for i in item) if isinstance(item, list) else letters[item]
                    for item in payload["ranking"]
                )
                summary += f"; ranking {order}"
        out.append(
            {
                "submission": sub,
                "task": task,
                "user": user,
                "prompt": assignment.prompt.key if assignment.prompt else "",
                "summary": summary,
            }
        )
    return out


def review(
    s: Session,
    *,
    project: Project,
    labeler: str = "",
    task_id: int | None = None,
    item: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Answers of a project for an admin to review, newest first, filtered by labeler, task,
    item (prompt id) and submission time; every field whole: the prompt, each output with its
    Likert score and flags, the ranking, the written text; rejected answers marked."""
    out = []
    for sub, assignment, task, user in reversed(
        done_rows(s, project, groups=GROUPS, rejected=True)
    ):
        prompt = assignment.prompt
        at = aware(sub.created_at)
        if (
            (labeler and user.username != labeler)
            or (task_id is not None and task.id != task_id)
            or (item and (prompt is None or prompt.key != item))
            or (since is not None and at < since)
            or (until is not None and at > until)
        ):
            continue
        payload = sub.payload
        outputs = []
        if task.kind in ("rate", "rank") and prompt is not None:
            ranks = (
                R.ranks_of(payload["ranking"], len(prompt.outputs)) if task.kind == "rank" else None
            )
            for i, (output, rating) in enumerate(
                zip(prompt.outputs, payload["ratings"], strict=True)
            ):
                outputs.append(
                    {
                        "letter": "ABCDEFGHI"[i],
                        "text": output.response,
                        "likert": rating["likert"],
                        "flags": [f for f, on in rating["flags"].items() if on],
                        "rank": ranks[i] + 1 if ranks else None,
                    }
                )
        out.append(
            {
                "submission": sub,
                "task": task,
                "user": user,
                "item": prompt.key if prompt else f"slot {assignment.item}",
                "prompt": prompt.text if prompt else "",
                "written": payload.get("response") or payload.get("prompt") or "",
                "outputs": outputs,
            }
        )
        if len(out) >= limit:
            break
    return out


def disagreement(s: Session, *, project: Project, top: int = 10) -> list[dict[str, Any]]:
    """Items of rank tasks where the labelers who ranked them disagree most: the share of
    (labeler pair, response pair) comparisons, ties left out, whose orders conflict."""
    by_item: dict[tuple[int, int], list[tuple[str, list[int]]]] = defaultdict(list)
    keys: dict[tuple[int, int], tuple[Task, str]] = {}
    for sub, assignment, task, user in done_rows(s, project, groups=GROUPS):
        if task.kind == "rank" and assignment.prompt is not None:
            k = len(assignment.prompt.outputs)
            by_item[(task.id, assignment.item)].append(
                (user.username, R.ranks_of(sub.payload["ranking"], k))
            )
            keys[(task.id, assignment.item)] = (task, assignment.prompt.key)
    rows = []
    for key, rankings in by_item.items():
        agree = compared = 0
        for x in range(len(rankings)):
            for y in range(x + 1, len(rankings)):
                a, c = rank_agreement(rankings[x][1], rankings[y][1])
                agree, compared = agree + a, compared + c
        if compared:
            task, prompt_key = keys[key]
            rows.append(
                {
                    "task": task,
                    "item": prompt_key,
                    "labelers": [name for name, _ in rankings],
                    "disagreement": 1 - agree / compared,
                    "compared": compared,
                }
            )
    rows.sort(key=lambda r: (-r["disagreement"], -r["compared"], r["item"]))
    return rows[:top]
