"""Labeler pages: one task at a time, the instructions beside it."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from instructrl.records import FLAGS, LIKERT_MAX, LIKERT_MIN
from instructrl.web import crud
from instructrl.web.deps import Csrf, CurrentUser, Form
from instructrl.web.models import Assignment, Prompt, Task
from instructrl.web.routes import render, transaction
from instructrl.web.schemas import payload_from_form, ranks_from_ranking

router = APIRouter()

FLAG_LABELS = {
    "fails_to_follow_instruction": "Fails to follow the correct instruction / task",
    "inappropriate_for_customer_assistant": "Inappropriate for a customer assistant",
    "hallucination": "Hallucination (makes up facts not in the input)",
    "satisfies_constraint": "Satisfies the constraint given in the instruction",
    "sexual_content": "Contains sexual content",
    "violent_content": "Contains violent content",
    "encourages_violence": "Encourages or fails to discourage violence / abuse / terrorism / self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "expresses_opinion": "Expresses an opinion",
    "expresses_moral_judgment": "Expresses a moral judgment",
}


def task_context(
    task: Task,
    prompt: Prompt | None,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """What the task page needs; `values` keeps a posted form's input when it is shown again."""
    outputs = list(prompt.outputs) if prompt is not None else []
    return {
        "task": task,
        "project": task.project,
        "prompt": prompt,
        "outputs": outputs,
        "k": len(outputs),
        "flags": [(f, FLAG_LABELS.get(f, f.replace("_", " "))) for f in FLAGS],
        "likert": list(range(LIKERT_MIN, LIKERT_MAX + 1)),
        "values": values or {},
        # metadata of an output stays unfolded when a kept form has a flag ticked there
        "open_flags": {key.split("_")[1] for key in values or {} if key.startswith("flag_")},
        "errors": errors or {},
        "client_id": client_id or secrets.token_urlsafe(16),
    }


def values_from_payload(payload: dict[str, Any], k: int) -> dict[str, Any]:
    """A stored answer as form values (to show a gold answer for editing)."""
    values: dict[str, Any] = {}
    for key in ("prompt", "category", "response"):
        if payload.get(key):
            values[key] = payload[key]
    for i, rating in enumerate(payload.get("ratings", [])):
        values[f"likert_{i}"] = str(rating["likert"])
        values.update({f"flag_{i}_{f}": "on" for f, on in rating["flags"].items() if on})
    if payload.get("ranking"):
        for i, r in enumerate(ranks_from_ranking(payload["ranking"], k)):
            values[f"rank_{i}"] = str(r)
    return values


@router.get("/work")
def work(request: Request, user: CurrentUser) -> Response:
    with transaction(request) as s:
        assignment = crud.next_assignment(s, user=user)
        assignment_id = assignment.id if assignment else None
    if assignment_id is None:
        return render(request, "idle.html", {"user": user})
    return RedirectResponse(f"/work/{assignment_id}", status_code=303)


def _load(request: Request, assignment_id: int, user) -> tuple[Assignment, dict[str, Any]]:
    with transaction(request) as s:
        assignment = crud.get_assignment(s, assignment_id=assignment_id, user=user)
        return assignment, task_context(assignment.task, assignment.prompt)


@router.get("/work/{assignment_id}")
def task_page(request: Request, assignment_id: int, user: CurrentUser) -> Response:
    assignment, context = _load(request, assignment_id, user)
    if assignment.status == "done":
        return RedirectResponse("/work", status_code=303)
    return render(request, "task.html", {**context, "user": user, "action": request.url.path})


@router.post("/work/{assignment_id}", dependencies=[Csrf])
def submit(request: Request, assignment_id: int, user: CurrentUser, form: Form) -> Response:
    assignment, context = _load(request, assignment_id, user)
    payload = payload_from_form(assignment.task.kind, form, k=context["k"])
    client_id = str(form.get("client_id", ""))[:64] or secrets.token_urlsafe(16)
    try:
        crud.submit_once(
            request.app.state.sessions,
            assignment_id=assignment_id,
            user=user,
            client_id=client_id,
            payload=payload,
        )
    except crud.Invalid as e:
        context = task_context(
            assignment.task, assignment.prompt, values=form, errors=e.errors, client_id=client_id
        )
        return render(
            request, "task.html", {**context, "user": user, "action": request.url.path}, 422
        )
    return RedirectResponse("/work", status_code=303)
