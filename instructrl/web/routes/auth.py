"""Sign in and out, invite links."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from instructrl.web import crud
from instructrl.web.deps import Csrf, CurrentUser, Form
from instructrl.web.routes import render, transaction

router = APIRouter()


def _start_session(request: Request, user_id: int) -> None:
    request.session.clear()  # a new session id and CSRF token after sign-in (no fixation)
    request.session["user_id"] = user_id


def _safe_next(value: str) -> str:
    return value if value.startswith("/") and not value.startswith("//") else "/"


@router.get("/")
def home(user: CurrentUser) -> Response:
    return RedirectResponse("/admin" if user.is_admin else "/work", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "errors": {}, "values": {}})


@router.post("/login", dependencies=[Csrf])
def login(request: Request, form: Form) -> Response:
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    with transaction(request) as s:
        user = crud.authenticate(s, username=username, password=password)
        user_id = user.id if user else None
    if user_id is None:
        return render(
            request,
            "login.html",
            {
                "next": _safe_next(str(form.get("next", "/"))),
                "errors": {"password": "wrong user name or password"},
                "values": {"username": username},
            },
            status_code=401,
        )
    _start_session(request, user_id)
    return RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)


@router.post("/logout", dependencies=[Csrf])
def logout(request: Request, _user: CurrentUser) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/invite/{token}")
def invite_page(request: Request, token: str) -> Response:
    return render(request, "invite.html", {"token": token, "errors": {}})


@router.post("/invite/{token}", dependencies=[Csrf])
def accept_invite(request: Request, token: str, form: Form) -> Response:
    password = str(form.get("password", ""))
    errors = {}
    if password != form.get("password2"):
        errors["password2"] = "the two passwords differ"
    else:
        try:
            with transaction(request) as s:
                user_id = crud.accept_invite(s, token=token, password=password).id
        except crud.Invalid as e:
            errors = e.errors
        except crud.Forbidden as e:
            errors = {"token": str(e)}
    if errors:
        return render(request, "invite.html", {"token": token, "errors": errors}, 422)
    _start_session(request, user_id)
    return RedirectResponse("/", status_code=303)
