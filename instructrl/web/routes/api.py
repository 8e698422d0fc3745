"""JSON API for scripts and the load bench: the same crud calls as the pages.

POST requests carry the session's CSRF token in the X-CSRF-Token header (GET /api/me gives it)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from instructrl.web import crud
from instructrl.web.deps import Csrf, CurrentUser, csrf_token
from instructrl.web.schemas import AssignmentOut, SubmissionIn, SubmissionOut
from instructrl.web.views import transaction

router = APIRouter(prefix="/api")


@router.get("/me")
def me(request: Request, user: CurrentUser) -> dict:
    return {
        "username": user.username,
        "is_admin": user.is_admin,
        "group": user.group,
        "status": user.status,
        "csrf_token": csrf_token(request),
    }


@router.get("/next", response_model=AssignmentOut | None)
def next_assignment(request: Request, user: CurrentUser) -> Response | AssignmentOut:
    with transaction(request) as s:
        a = crud.next_assignment(
            s, user=user, claim_minutes=request.app.state.settings.claim_minutes
        )
        if a is None:
            return Response(status_code=204)
        return AssignmentOut(
            id=a.id,
            task_id=a.task_id,
            kind=a.task.kind,
            title=a.task.title,
            instructions=a.task.instructions or a.task.project.instructions,
            prompt=a.prompt.text if a.prompt else None,
            outputs=[o.response for o in crud.outputs_of(a)],
        )


@router.post("/assignments/{assignment_id}/submission", dependencies=[Csrf])
def submit(request: Request, assignment_id: int, body: SubmissionIn, user: CurrentUser) -> Response:
    try:
        sub_id, created = crud.submit_once(
            request.app.state.sessions,
            assignment_id=assignment_id,
            user=user,
            client_id=body.client_id,
            payload=body.payload,
        )
    except crud.Invalid as e:
        return JSONResponse({"detail": "invalid", "errors": e.errors}, status_code=422)
    out = SubmissionOut(
        id=sub_id, assignment_id=assignment_id, client_id=body.client_id, created=created
    )
    return JSONResponse(out.model_dump(), status_code=201 if created else 200)
