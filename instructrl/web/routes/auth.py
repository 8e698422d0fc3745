"""Sign in and out, invite links."""

from __future__ import annotations

import threading
import time
from collections import deque

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from instructrl.web import crud
from instructrl.web.deps import Csrf, CurrentUser, Form
from instructrl.web.views import render, transaction

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


class FailedSignIns:
    """Failed sign-ins per user name in a sliding window: past `limit`, the name is locked for
    the rest of the window (slows password guessing; per process, forgotten on restart). Names
    whose failures have all expired are dropped, so guessing many names costs no lasting memory."""

    SWEEP_AT = 1024  # names held before expired ones are swept

    def __init__(self, limit: int = 10, window_s: float = 900.0, clock=time.monotonic):
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, name: str, now: float) -> int:
        times = self._times.get(name)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if times is not None and not times:
            del self._times[name]
        return len(times or ())

    def locked(self, name: str) -> bool:
        with self._lock:
            return self._recent(name, self.clock()) >= self.limit

    def failed(self, name: str) -> None:
        with self._lock:
            now = self.clock()
            if len(self._times) >= self.SWEEP_AT:
                for other in list(self._times):
                    self._recent(other, now)
            self._times.setdefault(name, deque()).append(now)

    def clear(self, name: str) -> None:
        with self._lock:
            self._times.pop(name, None)


def _login_error(request: Request, form: dict, username: str, message: str, status: int):
    context = {
        "next": _safe_next(str(form.get("next", "/"))),
        "errors": {"password": message},
        "values": {"username": username},
    }
    return render(request, "login.html", context, status_code=status)


@router.post("/login", dependencies=[Csrf])
def login(request: Request, form: Form) -> Response:
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    failures: FailedSignIns = request.app.state.failed_sign_ins
    if failures.locked(username):
        message = "too many failed attempts for this name: try again in 15 minutes"
        return _login_error(request, form, username, message, 429)
    with transaction(request) as s:
        user = crud.authenticate(s, username=username, password=password)
        user_id = user.id if user else None
    if user_id is None:
        failures.failed(username)
        return _login_error(request, form, username, "wrong user name or password", 401)
    failures.clear(username)
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
