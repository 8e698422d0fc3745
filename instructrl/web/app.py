"""`create_app(settings)`: the FastAPI app. Nothing connects at import time."""

from __future__ import annotations

import os
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from instructrl.config import ServeConfig
from instructrl.web import crud, db
from instructrl.web.deps import LoginRequired, csrf_token

HERE = Path(__file__).parent


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    t.env.globals["csrf_token"] = csrf_token
    return t


def create_app(settings: ServeConfig) -> FastAPI:
    """The app for `instructrl serve`'s settings; without secret_key, the key kept beside the
    database (secret_beside) signs session cookies."""
    from instructrl.web.routes import admin, api, auth, label

    engine = db.make_engine(settings.db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.check_schema:
            db.check_schema(engine)
        with db.transaction(app.state.sessions) as s:
            crud.fail_interrupted_jobs(s)
        yield
        engine.dispose()

    app = FastAPI(
        title="instructrl feedback",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = db.session_factory(engine)
    app.state.templates = templates()
    app.state.failed_sign_ins = auth.FailedSignIns()
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key or secret_beside(settings.db),
        session_cookie="instructrl_session",
        same_site="lax",
        https_only=settings.secure_cookies,
    )

    _add_handlers(app)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for router in (auth.router, label.router, api.router, admin.router):
        app.include_router(router)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    return app


def _add_handlers(app: FastAPI) -> None:
    """Security headers on every response; sign-in redirects; error pages (JSON for the API);
    crud's refusals mapped to HTTP statuses once, for every route."""

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        )
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(StarletteHTTPException)  # the router's own 404 / 405 too
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
            "accept", ""
        ):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return app.state.templates.TemplateResponse(
            request,
            "error.html",
            {"status": exc.status_code, "detail": exc.detail},
            status_code=exc.status_code,
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_down(request: Request, exc: Exception) -> Response:
        """The database went away (restart, network): a clean 503, no traceback; the pool
        checks connections before use (pool_pre_ping), so the next request reconnects."""
        return await http_error(
            request,
            HTTPException(503, "the database is not reachable right now: try again in a moment"),
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        """A malformed URL or body: the API keeps FastAPI's field list; a page says no such
        page (e.g. /work/abc, where an item number belongs)."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        return await http_error(request, HTTPException(404, f"no such page: {request.url.path}"))

    # crud's refusals mean the same on every route: no such row (404), not yours (403),
    # not now (409), not valid (422, where a route does not show its form again)
    @app.exception_handler(crud.Forbidden)
    async def forbidden(request: Request, exc: crud.Forbidden) -> Response:
        return await http_error(request, HTTPException(403, str(exc)))

    @app.exception_handler(crud.NotFound)
    async def not_found(request: Request, exc: crud.NotFound) -> Response:
        return await http_error(request, HTTPException(404, str(exc)))

    @app.exception_handler(crud.Invalid)  # a form a route does not show again: 422 with why
    async def invalid(request: Request, exc: crud.Invalid) -> Response:
        return await http_error(request, HTTPException(422, str(exc)))

    @app.exception_handler(crud.Conflict)
    async def conflict(request: Request, exc: crud.Conflict) -> Response:
        return await http_error(request, HTTPException(409, str(exc)))


def secret_beside(db_url: str) -> str:
    """A random key kept in a 0600 file: beside a SQLite file, else in the cache directory."""
    if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
        path = Path(db_url.removeprefix("sqlite:///")).with_suffix(".secret")
    else:
        import platformdirs

        cache = os.environ.get("INSTRUCTRL_CACHE") or platformdirs.user_cache_dir("instructrl")
        path = Path(cache) / "web.secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w") as f:
        f.write(key + "\n")
    return key
