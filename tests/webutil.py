"""Helpers for the web app tests: an app on a fresh database, sign-in, CSRF tokens, fixtures."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

from fastapi.testclient import TestClient

from instructrl.config import ServeConfig
from instructrl.web import crud, db
from instructrl.web.app import create_app

SECRET = "s" * 40
PASSWORD = "correct horse battery"
FLAGS_NONE: dict[str, bool] = {}


@contextmanager
def app_for(url: str, **settings):
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    app = create_app(ServeConfig(db=url, secret_key=SECRET, **settings))
    with TestClient(app, follow_redirects=False) as client:
        yield app, client


def add_user(app, username: str, **kw):
    with db.transaction(app.state.sessions) as s:
        return crud.create_user(s, username=username, password=kw.pop("password", PASSWORD), **kw)


def page_csrf(client: TestClient, path: str = "/login") -> str:
    html = client.get(path).text
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(app, username: str, password: str = PASSWORD) -> TestClient:
    """A new client (its own cookie jar) signed in as `username`; `.csrf` holds its token."""
    client = TestClient(app, follow_redirects=False)
    token = page_csrf(client)
    r = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    assert r.status_code == 303, r.text
    client.csrf = client.get("/api/me").json()["csrf_token"]
    return client


def post(client: TestClient, path: str, data: dict | None = None, files=None):
    return client.post(path, data={**(data or {}), "csrf_token": client.csrf}, files=files)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def prompts(n: int, prefix: str = "p") -> list[dict]:
    return [{"id": f"{prefix}{i}", "prompt": f"Question number {i}?"} for i in range(n)]


def samples(prompt_ids: list[str], k: int = 4) -> list[dict]:
    return [
        {
            "prompt_id": pid,
            "prompt": f"Question number {pid[1:]}?",
            "response": f"Answer {j} to {pid}.",
            "model": "tiny",
            "finish_reason": "eos",
        }
        for pid in prompt_ids
        for j in range(k)
    ]


def project_with_outputs(admin: TestClient, name: str = "demo", n: int = 3, k: int = 4) -> int:
    r = post(admin, "/admin/projects", {"name": name, "instructions": "Be helpful."})
    assert r.status_code == 303, r.text
    project_id = int(r.headers["location"].rsplit("/", 1)[1])
    files = {"prompts_file": ("prompts.jsonl", jsonl(prompts(n)))}
    assert post(admin, f"/admin/projects/{project_id}/prompts", files=files).status_code == 303
    ids = [p["id"] for p in prompts(n)]
    files = {"samples_file": ("samples.jsonl", jsonl(samples(ids, k)))}
    assert post(admin, f"/admin/projects/{project_id}/samples", files=files).status_code == 303
    return project_id


def add_task(admin: TestClient, project_id: int, kind: str, **kw) -> None:
    data = {"title": f"{kind} task", "kind": kind, "group": "training", "per_item": 1, **kw}
    r = post(admin, f"/admin/projects/{project_id}/tasks", data)
    assert r.status_code == 303, r.text


def rank_form(k: int, ranks: list[int], likert: int = 5, flags: dict | None = None) -> dict:
    data = {f"likert_{i}": str(likert) for i in range(k)}
    data.update({f"rank_{i}": str(r) for i, r in enumerate(ranks)})
    for name in flags or {}:
        for i in range(k):
            data[f"flag_{i}_{name}"] = "on"
    return data


def next_assignment(client: TestClient) -> int | None:
    r = client.get("/work")
    assert r.status_code == 303 or "Nothing to do" in r.text, r.text
    if r.status_code != 303:
        return None
    return int(r.headers["location"].rsplit("/", 1)[1])


def admin_and_labeler(app, *, n: int = 1, kind: str = "demonstration", labeler: str = "ann"):
    """An admin, a labeler, a project of n prompts with 4 outputs each and one task of `kind`:
    (admin client, labeler client, project id)."""
    add_user(app, "root", is_admin=True)
    add_user(app, labeler)
    admin = sign_in(app, "root")
    project_id = project_with_outputs(admin, n=n)
    add_task(admin, project_id, kind)
    return admin, sign_in(app, labeler), project_id
