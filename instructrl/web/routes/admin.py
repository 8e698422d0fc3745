"""Admin pages: projects, imports, generation jobs, tasks, users, dashboard, screening, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from instructrl import exporters
from instructrl.errors import UserError
from instructrl.web import analytics, crud, export, jobs
from instructrl.web.deps import AdminUser, Csrf, Form
from instructrl.web.models import GROUPS, TASK_KINDS, TASK_STATES, USER_GROUPS
from instructrl.web.schemas import GenerateForm, TaskForm, parse_form, payload_from_form
from instructrl.web.views import (
    UPLOAD_FORMATS,
    flash,
    pop_flash,
    read_upload,
    render,
    task_context,
    transaction,
    values_from_payload,
)

router = APIRouter(prefix="/admin")
EXPORTS = ("demonstrations", "comparisons", "ratings", "prompts")


@router.get("")
def admin_home(request: Request, user: AdminUser) -> Response:
    return _admin_page(request, user)


def _admin_page(
    request: Request,
    user: AdminUser,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    with transaction(request) as s:
        projects = crud.projects_with_prompt_counts(s)
        users = crud.list_users(s)
    context = {
        "user": user,
        "projects": projects,
        "users": users,
        "locked": request.app.state.failed_sign_ins.locked_names(),
        "groups": USER_GROUPS,
        "flash": pop_flash(request),
        "errors": errors or {},
        "values": values or {},
        "base_url": str(request.base_url).rstrip("/"),
    }
    return render(request, "admin.html", context, status_code)


@router.post("/projects", dependencies=[Csrf])
def create_project(request: Request, user: AdminUser, form: Form) -> Response:
    try:
        with transaction(request) as s:
            project = crud.create_project(
                s, name=str(form.get("name", "")), instructions=str(form.get("instructions", ""))
            )
            project_id = project.id
    except crud.Invalid as e:
        return _admin_page(request, user, errors=e.errors, values=form, status_code=422)
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/users", dependencies=[Csrf])
def create_user(request: Request, user: AdminUser, form: Form) -> Response:
    password = str(form.get("password", "")) or None
    try:
        with transaction(request) as s:
            created = crud.create_user(
                s,
                username=str(form.get("username", "")).strip(),
                password=password,
                is_admin=form.get("is_admin") == "on",
                group=str(form.get("group", "training")),
                status="candidate" if form.get("candidate") == "on" else "active",
            )
            token, name = created.invite_token, created.username
    except crud.Invalid as e:
        errors = {f"user_{k}": v for k, v in e.errors.items()}
        return _admin_page(request, user, errors=errors, values=form, status_code=422)
    if token:
        flash(request, f"invite link for {name}: {request.base_url}invite/{token}")
    else:
        flash(request, f"user {name} created")
    return RedirectResponse("/admin", status_code=303)


@router.get("/projects/{project_id}/review")
def review_page(
    request: Request,
    project_id: int,
    user: AdminUser,
    labeler: str = "",
    task: str = "",
    item: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    """Every answer whole, filtered; the items where labelers disagree most; reject buttons."""
    from datetime import UTC, datetime, timedelta

    errors: dict[str, str] = {}

    def day(value: str, end: bool) -> datetime | None:
        if not value:
            return None
        try:
            start = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            errors["filters"] = f"dates as YYYY-MM-DD, got {value!r}"
            return None
        return start + timedelta(days=1) if end else start

    task_id = int(task) if task.isdigit() else None
    limit = 200
    with transaction(request) as s:
        project = crud.get_project(s, project_id)
        rows = analytics.review(
            s,
            project=project,
            labeler=labeler,
            task_id=task_id,
            item=item.strip(),
            since=day(since, end=False),
            until=day(until, end=True),
            limit=limit,
        )
        context = {
            "user": user,
            "project": project,
            "rows": rows,
            "limit": limit,
            "disagreement": analytics.disagreement(s, project=project),
            "tasks": crud.project_tasks(s, project=project),
            "labelers": [u.username for u in crud.list_users(s) if not u.is_admin],
            "filters": {
                "labeler": labeler,
                "task": task_id,
                "item": item,
                "since": since,
                "until": until,
            },
            "errors": errors,
            "flash": pop_flash(request),
        }
        return render(request, "review.html", context, 422 if errors else 200)


@router.post("/submissions/{submission_id}/reject", dependencies=[Csrf])
def reject_answer(request: Request, submission_id: int, user: AdminUser, form: Form) -> Response:
    """Mark an answer rejected (kept, left out of exports and figures) and requeue its item."""
    with transaction(request) as s:
        sub = crud.reject(s, submission_id=submission_id, reason=str(form.get("reason", "")))
        project_id = sub.assignment.task.project_id
    flash(request, f"answer {submission_id} rejected: its item is back in the queue")
    return RedirectResponse(f"/admin/projects/{project_id}/review", status_code=303)


@router.post("/tasks/{task_id}", dependencies=[Csrf])
def update_task(request: Request, task_id: int, user: AdminUser, form: Form) -> Response:
    """Pause / resume / archive a task, or edit its instructions."""
    instructions = form.get("instructions")
    with transaction(request) as s:
        task = crud.set_task(
            s,
            task_id=task_id,
            state=str(form["state"]) if form.get("state") else None,
            instructions=str(instructions) if instructions is not None else None,
        )
        project_id, title, state = task.project_id, task.title, task.state
    flash(request, f"task {title!r} saved ({state})")
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/assignments/{assignment_id}/release", dependencies=[Csrf])
def release_claim(request: Request, assignment_id: int, user: AdminUser) -> Response:
    """Give an open claim back to the queue (the labeler moved on, or walked away)."""
    with transaction(request) as s:
        assignment = crud.release(s, assignment_id=assignment_id)
        project_id, name = assignment.task.project_id, assignment.user.username
    flash(request, f"released {name}'s item: the next labeler can take it")
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/assignments/{assignment_id}/reassign", dependencies=[Csrf])
def reassign_claim(request: Request, assignment_id: int, user: AdminUser, form: Form) -> Response:
    """Hand an open claim to another labeler (of the task's group, who has not had the item)."""
    username = str(form.get("username", "")).strip()
    with transaction(request) as s:
        assignment = crud.reassign(s, assignment_id=assignment_id, username=username)
        project_id = assignment.task.project_id
    flash(request, f"the item is now {username}'s")
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/users/{user_id}/{action}", dependencies=[Csrf])
def user_action(request: Request, user_id: int, action: str, user: AdminUser) -> Response:
    """deactivate (no sign-in, sessions ended at once), reactivate, reset (a new invite link,
    the password and every session gone), unlock (forget failed sign-ins from every address)."""
    if action not in ("deactivate", "reactivate", "reset", "unlock"):
        raise HTTPException(404, "expected deactivate, reactivate, reset or unlock")
    with transaction(request) as s:
        name = crud.get_user(s, user_id).username
        if action == "deactivate":
            crud.deactivate_user(s, user_id=user_id, by=user.id)
            message = f"{name} deactivated: signed out everywhere"
        elif action == "reactivate":
            crud.reactivate_user(s, user_id=user_id)
            message = f"{name} may sign in again"
        elif action == "reset":
            token = crud.reset_user(s, user_id=user_id)
            message = f"new invite link for {name}: {request.base_url}invite/{token}"
        else:
            request.app.state.failed_sign_ins.clear(name)
            message = f"{name} unlocked"
    flash(request, message)
    return RedirectResponse("/admin", status_code=303)


@router.post("/users/{user_id}", dependencies=[Csrf])
def update_user(request: Request, user_id: int, user: AdminUser, form: Form) -> Response:
    with transaction(request) as s:
        crud.set_user(
            s, user_id=user_id, group=form.get("group") or None, status=form.get("status") or None
        )
    flash(request, "user updated")
    return RedirectResponse("/admin", status_code=303)


@router.get("/projects/{project_id}")
def project_home(request: Request, project_id: int, user: AdminUser) -> Response:
    return project_page(request, project_id, user)


def project_page(
    request: Request,
    project_id: int,
    user: AdminUser,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    with transaction(request) as s:
        project = crud.get_project(s, project_id)
        prompts, with_outputs = crud.prompt_counts(s, project=project)
        board = analytics.dashboard(s, project=project)
        screening = analytics.screening_scores(s, project=project)
        recent = analytics.recent_submissions(s, project=project)
        screening_tasks = crud.screening_items(s, project=project)
        job_rows = crud.project_jobs(s, project=project)
        claims = crud.open_claims(s, project=project)
        for claim in claims:  # loaded for the template while the session is open
            _ = (claim.user.username, claim.task.title, claim.prompt)
    context = {
        "user": user,
        "project": project,
        "prompts": prompts,
        "with_outputs": with_outputs,
        "board": board,
        "screening": screening,
        "recent": recent,
        "screening_tasks": screening_tasks,
        "jobs": job_rows,
        "claims": claims,
        "claim_minutes": request.app.state.settings.claim_minutes,
        "kinds": TASK_KINDS,
        "task_states": TASK_STATES,
        "covers": {
            "all_now": "every prompt there now (later imports do not join)",
            "all_later": "every prompt, later imports too",
            "category": "the prompts of one category",
            "split": "the prompts of one split",
            "ids": "these prompt ids",
        },
        "groups": GROUPS,
        "exports": EXPORTS,
        "upload_formats": UPLOAD_FORMATS,
        "flash": pop_flash(request),
        "errors": errors or {},
        "values": values or {},
    }
    return render(request, "project.html", context, status_code)


@router.post("/projects/{project_id}/prompts", dependencies=[Csrf])
def import_prompts(request: Request, project_id: int, user: AdminUser, form: Form) -> Response:
    try:
        prompts, left_out = read_upload(form, "prompts_file", "prompt")
        with transaction(request) as s:
            added, skipped = crud.import_prompts(
                s, project=crud.get_project(s, project_id), prompts=prompts
            )
    except crud.Invalid as e:
        return project_page(
            request, project_id, user, errors=e.errors, values=_values(form), status_code=422
        )
    flash(
        request,
        f"{added} prompts added"
        + (f", {skipped} already there" if skipped else "")
        + _left_out(left_out),
    )
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


def _values(form: Any) -> dict[str, str]:
    return {"format": str(form.get("format") or "jsonl")}


def _left_out(skipped: list[str]) -> str:
    """The rows of an imported file that did not become prompts or outputs, said in the flash."""
    if not skipped:
        return ""
    more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
    return f"; {len(skipped)} rows of the file left out: " + "; ".join(skipped[:3]) + more


@router.post("/projects/{project_id}/samples", dependencies=[Csrf])
def import_samples(request: Request, project_id: int, user: AdminUser, form: Form) -> Response:
    try:
        samples, left_out = read_upload(form, "samples_file", "sample")
        with transaction(request) as s:
            added = crud.import_samples(s, project=crud.get_project(s, project_id), samples=samples)
    except crud.Invalid as e:
        return project_page(
            request, project_id, user, errors=e.errors, values=_values(form), status_code=422
        )
    flash(request, f"{added} model outputs attached" + _left_out(left_out))
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/projects/{project_id}/generate", dependencies=[Csrf])
def generate(request: Request, project_id: int, user: AdminUser, form: Form) -> Response:
    job, errors = parse_form(GenerateForm, form)
    with transaction(request) as s:
        prompts = crud.prompts_without_outputs(s, project_id=project_id)
    if not prompts:
        errors["model"] = "every prompt of this project has outputs already"
    if errors:
        return project_page(request, project_id, user, errors=errors, values=form, status_code=422)
    settings = request.app.state.settings
    job_id = jobs.start_generation(
        request.app.state.sessions,
        project_id=project_id,
        prompts=prompts,
        params=job.model_dump(),
        jobs_dir=settings.jobs_dir,
        python=settings.python,
    )
    flash(request, f"job {job_id}: generating {job.k} outputs for {len(prompts)} prompts")
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.get("/jobs/{job_id}")
def job_status(request: Request, job_id: int, user: AdminUser) -> dict:
    with transaction(request) as s:
        job = crud.get_job(s, job_id)
        return {
            "id": job.id,
            "status": job.status,
            "done": job.done,
            "total": job.total,
            "message": job.message,
        }


@router.post("/projects/{project_id}/tasks", dependencies=[Csrf])
def create_task(request: Request, project_id: int, user: AdminUser, form: Form) -> Response:
    task, errors = parse_form(TaskForm, form)
    try:
        if errors:
            raise crud.Invalid(errors)
        with transaction(request) as s:
            crud.create_task(s, project=crud.get_project(s, project_id), **task.model_dump())
    except crud.Invalid as e:
        errors = {f"task_{k}": v for k, v in e.errors.items()}
        return project_page(request, project_id, user, errors=errors, values=form, status_code=422)
    flash(request, "task created")
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


def _export_rows(request: Request, project_id: int, name: str, group: str) -> list[Any]:
    """One export file's records (or, for preference_pairs, TRL-style pair rows)."""
    if name not in (*EXPORTS, "preference_pairs"):
        raise HTTPException(404, f"expected one of {', '.join(EXPORTS)}, preference_pairs")
    try:
        with transaction(request) as s:
            files = export.records(s, project=crud.get_project(s, project_id), group=group)
    except crud.Invalid as e:
        raise HTTPException(422, str(e)) from None
    if name == "preference_pairs":
        return exporters.preference_pairs(files["comparisons"])
    return files[name]


def _attachment(name: str, group: str, suffix: str) -> dict[str, str]:
    filename = f"{'heldout_' if group == 'heldout' else ''}{name}.{suffix}"
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@router.get("/projects/{project_id}/export/{name}.jsonl")
def download_export(
    request: Request, project_id: int, name: str, user: AdminUser, group: str = "training"
) -> Response:
    rows = _export_rows(request, project_id, name, group)
    body = "".join(
        json.dumps(r if isinstance(r, dict) else r.to_dict(), ensure_ascii=False) + "\n"
        for r in rows
    )
    return Response(body, media_type="application/jsonl", headers=_attachment(name, group, "jsonl"))


@router.get("/projects/{project_id}/export/{name}.parquet")
def download_parquet(
    request: Request, project_id: int, name: str, user: AdminUser, group: str = "training"
) -> Response:
    """The same file as Parquet (through the `datasets` library, one Arrow schema)."""
    import tempfile

    rows = exporters.table_rows(_export_rows(request, project_id, name, group))
    if not rows:
        raise HTTPException(404, f"no {name} to export yet")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = exporters.write_table(rows, Path(tmp) / name, "parquet")
        except UserError as e:
            raise HTTPException(501, str(e)) from None
        body = path.read_bytes()
    return Response(
        body,
        media_type="application/vnd.apache.parquet",
        headers=_attachment(name, group, "parquet"),
    )


def _gold_target(s, task_id: int, prompt_id: int):
    try:
        return crud.gold_target(s, task_id=task_id, prompt_id=prompt_id)
    except crud.Invalid as e:
        raise HTTPException(422, str(e)) from None


@router.get("/tasks/{task_id}/gold/{prompt_id}")
def gold_page(request: Request, task_id: int, prompt_id: int, user: AdminUser) -> Response:
    with transaction(request) as s:
        task, prompt = _gold_target(s, task_id, prompt_id)
        gold = crud.get_gold(s, task_id=task_id, prompt_id=prompt_id)
        values = values_from_payload(gold.payload, len(prompt.outputs)) if gold else {}
        context = task_context(task, prompt, values=values)
    return render(
        request, "task.html", {**context, "user": user, "action": request.url.path, "gold": True}
    )


@router.post("/tasks/{task_id}/gold/{prompt_id}", dependencies=[Csrf])
def set_gold(
    request: Request, task_id: int, prompt_id: int, user: AdminUser, form: Form
) -> Response:
    with transaction(request) as s:
        task, prompt = _gold_target(s, task_id, prompt_id)
        context = task_context(task, prompt, values=form)
        payload = payload_from_form(task.kind, form, k=context["k"])
        try:
            with s.begin_nested():
                crud.set_gold(s, task=task, prompt=prompt, payload=payload)
        except crud.Invalid as e:
            context["errors"] = e.errors
            return render(
                request,
                "task.html",
                {**context, "user": user, "action": request.url.path, "gold": True},
                422,
            )
        project_id = task.project_id
    flash(request, "gold answer saved")
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)
