"""Labeler pages: one task at a time, the instructions beside it."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from instructrl.web import crud
from instructrl.web.deps import Csrf, CurrentUser, Form
from instructrl.web.models import Assignment
from instructrl.web.schemas import payload_from_form
from instructrl.web.views import flash, pop_flash, render, task_context, transaction

router = APIRouter()


@router.get("/work")
def work(request: Request, user: CurrentUser, task: int | None = None) -> Response:
    """The next item: of the task the labeler picked (`?task=ID`), else of any task open to them."""
    with transaction(request) as s:
        assignment = crud.next_assignment(
            s, user=user, claim_minutes=request.app.state.settings.claim_minutes, task_id=task
        )
        assignment_id = assignment.id if assignment else None
        choices = [] if assignment_id else [(t.id, t.title, t.kind, t.project.name, n)
                                             for t, n in crud.task_choices(s, user=user)]  # fmt: skip
    if assignment_id is None:
        context = {"user": user, "flash": pop_flash(request), "choices": choices}
        return render(request, "idle.html", context)
    return RedirectResponse(f"/work/{assignment_id}", status_code=303)


@router.get("/tasks")
def tasks(request: Request, user: CurrentUser) -> Response:
    """The task picker: every task open to the labeler with the items it still has for them."""
    with transaction(request) as s:
        choices = [(t.id, t.title, t.kind, t.project.name, n)
                   for t, n in crud.task_choices(s, user=user)]  # fmt: skip
    return render(request, "tasks.html", {"user": user, "choices": choices})


def _load(request: Request, assignment_id: int, user) -> tuple[Assignment, dict[str, Any]]:
    with transaction(request) as s:
        assignment = crud.get_assignment(s, assignment_id=assignment_id, user=user)
        crud.touch(assignment)  # the labeler is on it: the claim stays theirs
        n, total = crud.position(s, assignment=assignment)
        return assignment, {**task_context(assignment.task, assignment.prompt), "n": n, "of": total}


@router.get("/work/{assignment_id}")
def task_page(request: Request, assignment_id: int, user: CurrentUser) -> Response:
    assignment, context = _load(request, assignment_id, user)
    if assignment.status != "open":
        return RedirectResponse("/work", status_code=303)
    return render(request, "task.html", _page(request, context, user))


def _page(request: Request, context: dict[str, Any], user) -> dict[str, Any]:
    return {
        **context,
        "user": user,
        "action": request.url.path,
        "flash": pop_flash(request),
        "skip_reasons": crud.SKIP_REASONS,
    }


@router.post("/work/{assignment_id}/skip", dependencies=[Csrf])
def skip(request: Request, assignment_id: int, user: CurrentUser, form: Form) -> Response:
    """Pass on an item with a reason ("cannot judge", ...): recorded, the slot freed."""
    try:
        with transaction(request) as s:
            crud.skip(
                s,
                assignment_id=assignment_id,
                user=user,
                reason=str(form.get("reason", "")),
                note=str(form.get("note", "")),
            )
    except crud.Invalid as e:
        _, context = _load(request, assignment_id, user)
        context = {**_page(request, context, user), "skip_errors": e.errors}
        return render(request, "task.html", context, 422)
    flash(request, "skipped: here is the next item")
    return RedirectResponse("/work", status_code=303)


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
        return render(request, "task.html", _page(request, context, user), 422)
    flash(request, "saved: thank you")
    return RedirectResponse("/work", status_code=303)
