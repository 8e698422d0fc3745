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


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _start_session(request: Request, user_id: int) -> None:
    with transaction(request) as s:
        token = crud.start_session(s, user_id=user_id, client=_client(request))
    request.session.clear()  # a new session token and CSRF token after sign-in (no fixation)
    request.session["sid"] = token


def _safe_next(value: str) -> str:
    return value if value.startswith("/") and not value.startswith("//") else "/"


@router.get("/")
def home(user: CurrentUser) -> Response:
    return RedirectResponse("/admin" if user.is_admin else "/work", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "errors": {}, "values": {}})


class FailedSignIns:
    """Failed sign-ins per user name and client address in a sliding window: past `limit`,
    that name is locked for that address for the rest of the window (slows password guessing;
    per process, forgotten on restart). Keyed by address too, so guessing from one place cannot
    lock the admin out everywhere; an admin can unlock a name (`clear`). Keys whose failures
    have all expired are dropped, so guessing many names costs no lasting memory."""

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
        """Forget a key's failures, or, for a bare user name, the name's from every address."""
        with self._lock:
            for key in [k for k in self._times if k == name or k.startswith(f"{name}\0")]:
                del self._times[key]

    def locked_names(self) -> set[str]:
        """User names locked from at least one address (the admin page shows them)."""
        with self._lock:
            now = self.clock()
            return {
                k.split("\0")[0] for k in list(self._times) if self._recent(k, now) >= self.limit
            }


def sign_in_key(name: str, client: str) -> str:
    return f"{name}\0{client}"


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
    key = sign_in_key(username, _client(request))
    if failures.locked(key):
        message = "too many failed attempts for this name: try again in 15 minutes, or ask an admin"
        return _login_error(request, form, username, message, 429)
    try:
        with transaction(request) as s:
            user = crud.authenticate(s, username=username, password=password)
            user_id = user.id if user else None
    except crud.Forbidden as e:
        return _login_error(request, form, username, str(e), 403)
    if user_id is None:
        failures.failed(key)
        return _login_error(request, form, username, "wrong user name or password", 401)
    failures.clear(key)
    _start_session(request, user_id)
    return RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)


@router.post("/logout", dependencies=[Csrf])
def logout(request: Request, _user: CurrentUser) -> Response:
    with transaction(request) as s:
        crud.end_session(s, request.session.get("sid"))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/invite/{token}")
def invite_page(request: Request, token: str) -> Response:
    with transaction(request) as s:
        user = crud.invited_user(s, token)
        name = user.username if user else None
    return render(
        request, "invite.html", {"token": token, "errors": {}, "name": name}, 200 if name else 404
    )


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
        with transaction(request) as s:
            user = crud.invited_user(s, token)
            name = user.username if user else None
        context = {"token": token, "errors": errors, "name": name}
        return render(request, "invite.html", context, 422)
    _start_session(request, user_id)
    return RedirectResponse("/", status_code=303)
