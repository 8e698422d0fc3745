"""Who may call what: every route refuses the anonymous, admin routes refuse labelers, one
labeler cannot read or answer another's work; input is escaped on output and stored verbatim."""

from __future__ import annotations

import re
import subprocess
import sys

from fastapi.routing import APIRoute
from webutil import (
    add_task,
    add_user,
    admin_and_labeler,
    app_for,
    jsonl,
    next_assignment,
    page_csrf,
    post,
    project_with_outputs,
    sign_in,
)

from instructrl.config import ServeConfig
from instructrl.web.app import create_app

PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/invite/{token}"),
    ("POST", "/invite/{token}"),
}
PARAMS = {"name": "demonstrations", "token": "t"}


def _routes(_app):
    """Every route of every router module under instructrl.web.routes (a new module is walked
    too), with its path parameters filled in."""
    import importlib
    import pkgutil

    from instructrl.web import routes

    for info in pkgutil.iter_modules(routes.__path__):
        router = getattr(importlib.import_module(f"{routes.__name__}.{info.name}"), "router", None)
        for route in router.routes if router else []:
            if isinstance(route, APIRoute):
                for method in route.methods:
                    path = re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "1"), route.path)
                    yield method, route.path, path


def _call(client, method, path, csrf):
    if method == "GET":
        return client.get(path)
    return client.post(path, data={"csrf_token": csrf}, headers={"X-CSRF-Token": csrf})


def test_every_route_refuses_the_anonymous_and_admin_routes_refuse_labelers(tmp_path):
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, client):
        add_user(app, "root", is_admin=True)
        add_user(app, "ann")
        admin = sign_in(app, "root")
        project_with_outputs(admin, n=1)
        csrf = page_csrf(client)
        ann = sign_in(app, "ann")
        checked = 0
        for method, template, path in _routes(app):
            if (method, template) in PUBLIC:
                continue
            r = _call(client, method, path, csrf)
            anonymous_refused = r.status_code == 401 or (
                r.status_code == 303 and r.headers["location"].startswith("/login")
            )
            assert anonymous_refused, (method, path, r.status_code)
            if template.startswith("/admin"):
                r = _call(ann, method, path, ann.csrf)
                assert r.status_code == 403, (method, path, r.status_code)
            checked += 1
        assert checked >= 20  # the table above really walked the app


def test_post_without_csrf_token_is_refused(tmp_path):
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, _client):
        add_user(app, "root", is_admin=True)
        admin = sign_in(app, "root")
        assert admin.post("/admin/projects", data={"name": "x"}).status_code == 403
        r = admin.post("/admin/projects", data={"name": "x", "csrf_token": "forged"})
        assert r.status_code == 403
        assert post(admin, "/admin/projects", {"name": "x"}).status_code == 303


def test_a_labeler_cannot_see_or_answer_anothers_assignment(db_url):
    with app_for(db_url) as (app, _client):
        admin, ann, pid = admin_and_labeler(app, n=2)
        add_user(app, "bob")
        bob = sign_in(app, "bob")
        mine = next_assignment(ann)
        assert bob.get(f"/work/{mine}").status_code == 403
        r = post(bob, f"/work/{mine}", {"response": "stolen", "client_id": "bob-steal-1"})
        assert r.status_code == 403
        r = bob.post(
            f"/api/assignments/{mine}/submission",
            json={"client_id": "bob-steal-2", "payload": {"response": "stolen"}},
            headers={"X-CSRF-Token": bob.csrf},
        )
        assert r.status_code == 403
        assert bob.get("/work/99999").status_code == 403  # same answer for "not there"
        assert (
            post(ann, f"/work/{mine}", {"response": "mine", "client_id": "ann-own-1"}).status_code
            == 303
        )
        r = bob.post(
            f"/api/assignments/{mine}/submission",
            json={"client_id": "ann-own-1", "payload": {"response": "replay"}},
            headers={"X-CSRF-Token": bob.csrf},
        )
        assert r.status_code == 409  # someone else's client id is not a way in
        demos = admin.get(f"/admin/projects/{pid}/export/demonstrations.jsonl").text
        assert '"mine"' in demos and "stolen" not in demos and "replay" not in demos


def test_html_is_escaped_and_sql_like_text_stored_verbatim(db_url):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    sqlish = "Robert'); DROP TABLE prompts;-- \" OR '1'='1"
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        add_user(app, "ann")
        admin = sign_in(app, "root")
        r = post(admin, "/admin/projects", {"name": evil, "instructions": evil})
        pid = int(r.headers["location"].rsplit("/", 1)[1])
        rows = [{"id": "x1", "prompt": evil}, {"id": "x2", "prompt": sqlish}]
        post(
            admin,
            f"/admin/projects/{pid}/prompts",
            files={"prompts_file": ("p.jsonl", jsonl(rows))},
        )
        add_task(admin, pid, "demonstration", instructions=evil)
        ann = sign_in(app, "ann")
        first = next_assignment(ann)
        page = ann.get(f"/work/{first}").text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert "<script>alert" not in admin.get("/admin").text
        assert "<script>alert" not in admin.get(f"/admin/projects/{pid}").text
        post(ann, f"/work/{first}", {"response": sqlish, "client_id": "ann-sql-1"})
        second = next_assignment(ann)
        post(ann, f"/work/{second}", {"response": evil, "client_id": "ann-sql-2"})
        review = admin.get(f"/admin/projects/{pid}").text  # the answers, shown for review
        assert "<script>alert" not in review and "&lt;script&gt;alert" in review
        demos = admin.get(f"/admin/projects/{pid}/export/demonstrations.jsonl")
        import json

        rows = [json.loads(line) for line in demos.text.splitlines()]
        assert [(d["prompt"], d["response"]) for d in rows] == [(evil, sqlish), (sqlish, evil)]
        assert "Content-Security-Policy" in demos.headers


def test_app_module_never_imports_torch_nor_connects_at_creation():
    code = (
        "import sys\n"
        "from instructrl.config import ServeConfig\n"
        "from instructrl.web.app import create_app\n"
        "from instructrl.web import commands, crud, jobs\n"
        "create_app(ServeConfig(db='postgresql+psycopg://u:p@127.0.0.1:9/none', secret_key='k' * 32))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_short_secret_key_is_refused():
    import pytest

    from instructrl.errors import UserError

    with pytest.raises(UserError, match="at least 32"):
        create_app(ServeConfig(db="sqlite://", secret_key="short"))
