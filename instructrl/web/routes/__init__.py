"""Thin routers per resource: parse the request, call crud in one transaction, render."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(
        request, name, context, status_code=status_code
    )


def transaction(request: Request):
    from instructrl.web.db import transaction as tx

    return tx(request.app.state.sessions)
