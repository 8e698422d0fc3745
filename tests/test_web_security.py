"""Who may call what: every route refuses the anonymous, admin routes refuse labelers, one
labeler cannot read or answer another's work; input is escaped on output and stored verbatim."""

from __future__ import annotations

import re
import subprocess
import sys

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from webutil import (
    PASSWORD,
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
from instructrl.web import db
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


def test_sessions_are_server_side_records(tmp_path):
    """Sign-out ends a session even for a copied cookie; deactivation ends every session at
    once and refuses sign-in; a reset gives a new invite link (naming the user) and ends
    sessions; reactivation lets the user back in."""
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, _client):
        add_user(app, "root", is_admin=True)
        ann_id = add_user(app, "ann").id
        ann = sign_in(app, "ann")
        kept = dict(ann.cookies)  # a copy of the cookie, as a stolen or saved one
        assert ann.get("/work").status_code == 200
        assert post(ann, "/logout").status_code == 303
        thief = TestClient(app, follow_redirects=False, cookies=kept)
        assert thief.get("/work").headers["location"].startswith("/login")
        assert thief.get("/api/me").status_code == 401

        ann = sign_in(app, "ann")
        other = sign_in(app, "ann")  # a second browser
        admin = sign_in(app, "root")
        assert post(admin, f"/admin/users/{ann_id}/deactivate").status_code == 303
        for client in (ann, other):
            assert client.get("/api/me").status_code == 401
        page = TestClient(app, follow_redirects=False)
        form = {"username": "ann", "password": PASSWORD, "csrf_token": page_csrf(page)}
        r = page.post("/login", data=form)
        assert r.status_code == 403 and "deactivated: ask an admin" in r.text
        assert "deactivated" in admin.get("/admin").text
        assert post(admin, f"/admin/users/{ann_id}/reactivate").status_code == 303
        ann = sign_in(app, "ann")
        assert post(admin, f"/admin/users/{admin_id(app)}/deactivate").status_code == 422

        r = post(admin, f"/admin/users/{ann_id}/reset")
        link = admin.get("/admin").text.split("new invite link for ann: ")[1].split("<")[0]
        assert ann.get("/api/me").status_code == 401  # the reset ended her session
        token = link.rsplit("/", 1)[1]
        fresh = TestClient(app, follow_redirects=False)
        assert "Choose a password, ann" in fresh.get(f"/invite/{token}").text
        r = fresh.post(
            f"/invite/{token}",
            data={"password": "new-password-1", "password2": "new-password-1",
                  "csrf_token": page_csrf(fresh, f"/invite/{token}")},
        )  # fmt: skip
        assert r.status_code == 303
        used = fresh.get(f"/invite/{token}")
        assert used.status_code == 404 and "not valid" in used.text and "password2" not in used.text
        sign_in(app, "ann", "new-password-1")


def admin_id(app) -> int:
    from sqlalchemy import select

    from instructrl.web.models import User

    with db.transaction(app.state.sessions) as s:
        return s.scalar(select(User.id).where(User.username == "root"))


def test_failed_sign_ins_lock_a_name_per_address_and_an_admin_unlocks_it(tmp_path):
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, _client):
        root_id = add_user(app, "root", is_admin=True).id
        attacker = TestClient(app, follow_redirects=False, client=("203.0.113.9", 4000))
        token = page_csrf(attacker)

        def attempt(client, password, csrf):
            form = {"username": "root", "password": password, "csrf_token": csrf}
            return client.post("/login", data=form).status_code

        assert [attempt(attacker, f"guess-{i}", token) for i in range(10)] == [401] * 10
        assert attempt(attacker, PASSWORD, token) == 429  # locked for that address
        admin = sign_in(app, "root")  # from another address the admin still signs in
        assert "locked (failed sign-ins)" in admin.get("/admin").text
        assert post(admin, f"/admin/users/{root_id}/unlock").status_code == 303
        assert attempt(attacker, PASSWORD, token) == 303
