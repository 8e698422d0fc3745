"""Typed dependencies: the database, the signed-in user, CSRF checks."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from instructrl.web.models import User

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """Raised for an anonymous request: pages redirect to /login, the API answers 401."""


def sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use): every form carries it back."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def form_data(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        return dict(await request.form())
    return {}


def check_csrf(request: Request, form: Annotated[dict[str, Any], Depends(form_data)]) -> None:
    sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD) or ""
    expected = request.session.get("csrf") or ""
    if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")


def current_user(request: Request) -> User:
    """The user of the request's login session (a server-side record: signing out, a new
    password, a reset or deactivation end it at once, whatever cookie a browser kept)."""
    from instructrl.web import crud

    token = request.session.get("sid")
    if token is None:
        raise LoginRequired()
    with sessions(request)() as s:
        user = crud.session_user(s, token)
    if user is None:
        request.session.clear()
        raise LoginRequired()
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise HTTPException(403, "admins only")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
Form = Annotated[dict[str, Any], Depends(form_data)]
Csrf = Depends(check_csrf)
