"""The feedback app through FastAPI's TestClient, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from sqlalchemy import select
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
    rank_form,
    sign_in,
)

from instructrl import records as R
from instructrl.web import analytics, crud, db
from instructrl.web.models import Assignment, Base, Prompt, Submission


def test_migrations_build_the_models_schema(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = db.make_engine(db_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
    assert diff == [], diff


def test_old_schema_is_refused_with_the_command_to_run(tmp_path):
    from instructrl.errors import UserError

    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('0000')")
    with pytest.raises(UserError, match="instructrl db upgrade"):
        db.check_schema(engine)


def test_sign_in_and_wrong_password(db_url):
    with app_for(db_url) as (app, client):
        add_user(app, "ann")
        token = page_csrf(client)
        r = client.post("/login", data={"username": "ann", "password": "nope", "csrf_token": token})
        assert r.status_code == 401
        assert "wrong user name or password" in r.text and 'value="ann"' in r.text  # input kept
        r = client.post("/login", data={"username": "ann", "password": PASSWORD})
        assert r.status_code == 403  # no CSRF token
        r = client.post(
            "/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token}
        )
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        assert client.get("/api/me").json()["username"] == "ann"


def test_passwords_are_hashed(db_url):
    with app_for(db_url) as (app, _client):
        user = add_user(app, "ann")
        assert user.password_hash.startswith("$argon2") and PASSWORD not in user.password_hash


def test_label_flow_export_and_records(db_url, tmp_path):
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        add_user(app, "ann")
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=2, k=4)
        add_task(admin, pid, "demonstration")
        add_task(admin, pid, "rank")
        ann = sign_in(app, "ann")
        # demonstrations first (task order), one prompt at a time
        first = next_assignment(ann)
        assert "Question number 0?" in ann.get(f"/work/{first}").text
        r = post(ann, f"/work/{first}", {"response": "", "client_id": "c-demo-0000"})
        assert r.status_code == 422 and 'id="error-response"' in r.text
        assert (
            post(
                ann, f"/work/{first}", {"response": "Paris.", "client_id": "c-demo-0000"}
            ).status_code
            == 303
        )
        second = next_assignment(ann)
        post(ann, f"/work/{second}", {"response": "Four.", "client_id": "c-demo-0001"})
        # rank: a missing Likert score comes back beside its field with the rest kept
        third = next_assignment(ann)
        form = rank_form(4, [2, 1, 2, 3], flags={"hallucination"})
        del form["likert_1"]
        r = post(ann, f"/work/{third}", {**form, "client_id": "c-rank-0000"})
        assert r.status_code == 422 and 'id="error-likert_1"' in r.text
        assert r.text.count('<details class="flags" open>') == 4  # ticked flags stay in view
        assert r.text.count('_hallucination" checked>') == 4
        assert 'name="rank_2" id="rank_2">' in r.text and '<option value="2" selected>' in r.text
        form["likert_1"] = "6"
        assert post(ann, f"/work/{third}", {**form, "client_id": "c-rank-0000"}).status_code == 303
        export = {
            name: admin.get(f"/admin/projects/{pid}/export/{name}.jsonl")
            for name in ("demonstrations", "comparisons", "ratings", "preference_pairs")
        }
        parquet = admin.get(f"/admin/projects/{pid}/export/comparisons.parquet")
    rows = {name: [json.loads(x) for x in r.text.splitlines()] for name, r in export.items()}
    demos = [R.Demonstration.from_dict(d) for d in rows["demonstrations"]]
    assert [d.response for d in demos] == ["Paris.", "Four."]
    assert demos[0].prompt_id == "p0" and demos[0].labeler == "ann"
    (comparison,) = [R.Comparison.from_dict(c) for c in rows["comparisons"]]
    assert comparison.ranking == [1, [0, 2], 3]  # ranks 2,1,2,3: a tie between A and C
    assert comparison.responses == [f"Answer {j} to p0." for j in range(4)]
    assert comparison.extra["models"] == ["tiny"] * 4  # which policy wrote each response
    ratings = [R.Rating.from_dict(x) for x in rows["ratings"]]
    assert [x.likert for x in ratings] == [5, 6, 5, 5]
    # the tie leaves 5 of the C(4, 2) = 6 pairs, as TRL's prompt/chosen/rejected rows
    pairs = [(p["chosen"], p["rejected"]) for p in rows["preference_pairs"]]
    assert pairs == [(f"Answer {w} to p0.", f"Answer {lo} to p0.") for w, lo in comparison.pairs()]
    assert len(pairs) == 5
    datasets = pytest.importorskip("datasets")
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    (tmp_path / "c.parquet").write_bytes(parquet.content)
    table = datasets.Dataset.from_parquet(str(tmp_path / "c.parquet"))
    assert table["ranks"] == [comparison.ranks()] and table["responses"] == [comparison.responses]
    assert all(x.flags["hallucination"] and not x.flags["sexual_content"] for x in ratings)


def test_retry_with_same_client_id_is_stored_once(db_url):
    with app_for(db_url) as (app, _client):
        _admin, ann, _pid = admin_and_labeler(app)
        a = ann.get("/api/next").json()["id"]
        body = {"client_id": "retry-0001", "payload": {"response": "Hi."}}
        url = f"/api/assignments/{a}/submission"
        headers = {"X-CSRF-Token": ann.csrf}
        first = ann.post(url, json=body, headers=headers)
        again = ann.post(url, json=body, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"] and again.json()["created"] is False
        other = ann.post(url, json={**body, "client_id": "retry-0002"}, headers=headers)
        assert other.status_code == 409
        assert ann.post(url, json=body).status_code == 403  # no CSRF header
        with app.state.sessions() as s:
            assert s.query(Submission).count() == 1


def test_concurrent_submissions_never_overwrite(db_url):
    """Eight labelers submit at once (threads, one transaction each); then two copies of one
    answer race with different client ids: exactly one is stored."""
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        users = [add_user(app, f"l{i}") for i in range(8)]
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=8)
        add_task(admin, pid, "demonstration", per_item=1)
        factory = app.state.sessions
        barrier = threading.Barrier(len(users))
        got: dict[str, int | None] = {}
        errors: list[BaseException] = []

        def take(user):
            try:
                barrier.wait()
                with db.transaction(factory) as s:
                    a = crud.next_assignment(s, user=user)
                    got[user.username] = a.id if a else None
                barrier_submit.wait()
                crud.submit_once(
                    factory,
                    assignment_id=got[user.username],
                    user=user,
                    client_id=f"{user.username}-answer",
                    payload={"response": f"from {user.username}"},
                )
            except BaseException as e:  # surfaced below
                errors.append(e)

        barrier_submit = threading.Barrier(len(users))
        threads = [threading.Thread(target=take, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(set(got.values())) == 8  # every labeler got a different item
        with factory() as s:
            stored = {(x.user_id, x.payload["response"]) for x in s.query(Submission)}
        assert stored == {(u.id, f"from {u.username}") for u in users}

        # the same assignment twice at once, different client ids: one wins, one conflicts
        add_task(admin, pid, "demonstration", per_item=2)
        user = users[0]
        with db.transaction(factory) as s:
            a_id = crud.next_assignment(s, user=user).id
        outcomes: list[str] = []
        race = threading.Barrier(2)

        def twin(client_id):
            race.wait()
            try:
                crud.submit_once(
                    factory, assignment_id=a_id, user=user, client_id=client_id,
                    payload={"response": client_id},
                )  # fmt: skip
                outcomes.append("stored")
            except crud.Conflict:
                outcomes.append("conflict")

        pair = [threading.Thread(target=twin, args=(c,)) for c in ("twin-aaaa", "twin-bbbb")]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        assert sorted(outcomes) == ["conflict", "stored"]


def test_last_slot_goes_to_one_labeler(db_url):
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        users = [add_user(app, f"l{i}") for i in range(4)]
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=1)
        add_task(admin, pid, "demonstration", per_item=3)
        barrier = threading.Barrier(4)
        got = []

        def take(user):
            barrier.wait()
            with db.transaction(app.state.sessions) as s:
                a = crud.next_assignment(s, user=user)
                got.append(a.slot if a else None)

        threads = [threading.Thread(target=take, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got, key=lambda x: (x is None, x)) == [0, 1, 2, None]


def test_dashboard_agreement_and_time_by_hand(db_url):
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        for name in ("ann", "bob", "cat"):
            add_user(app, name)
        for name in ("hal", "ida"):
            add_user(app, name, group="heldout")
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=1, k=4)
        add_task(admin, pid, "rank", per_item=3)
        add_task(admin, pid, "rank", per_item=2, group="heldout")
        answers = {
            "ann": [1, 2, 3, 4],
            "bob": [1, 2, 4, 3],
            "cat": [1, 1, 3, 4],
            "hal": [1, 2, 3, 4],
            "ida": [4, 3, 2, 1],
        }
        for name, ranks in answers.items():
            c = sign_in(app, name)
            form = {**rank_form(4, ranks), "client_id": f"{name}-rank-1"}
            assert post(c, f"/work/{next_assignment(c)}", form).status_code == 303
        # time per answer, set by hand: ann 30 s, bob 10 s, cat 20 s, held-out 100 s and 200 s
        seconds = {"ann": 30.0, "bob": 10.0, "cat": 20.0, "hal": 100.0, "ida": 200.0}
        with db.transaction(app.state.sessions) as s:
            for sub in s.scalars(select(Submission)):
                sub.seconds = seconds[s.get(crud.User, sub.user_id).username]
        with app.state.sessions() as s:
            board = analytics.dashboard(s, project=s.get(crud.Project, pid))
        page = admin.get(f"/admin/projects/{pid}").text
    # by hand: ann-bob agree on 5 of 6 pairs; ann-cat 5 of 5 untied; bob-cat 4 of 5;
    # hal-ida 0 of 6 (reversed). Labelers of different groups are never compared.
    by_group = board["agreement_by_group"]
    assert by_group["training"]["agreement"] == pytest.approx(14 / 16, abs=1e-4)
    assert by_group["heldout"]["agreement"] == 0.0
    assert board["agreement"]["agreement"] == pytest.approx(14 / 22, abs=1e-4)
    per = {x["username"]: x for x in board["labelers"]}
    assert per["ann"]["agreement"] == pytest.approx(10 / 11, abs=1e-4)
    assert per["bob"]["agreement"] == pytest.approx(9 / 11, abs=1e-4)
    assert per["cat"]["agreement"] == pytest.approx(9 / 10, abs=1e-4)
    assert per["hal"]["agreement"] == 0.0 and per["hal"]["group"] == "heldout"
    assert per["ann"]["compared"] == 11 and per["ann"]["ci95"] == pytest.approx(
        [10 / 11] * 2, abs=1e-4
    )  # 1 prompt
    assert "<td>rank task</td><td>rank</td><td>training</td><td>3</td><td>1</td>" in page
    assert "Overall 63.6 %" in page and "training labelers: 87.5 %" in page
    assert "Likert 5, 5, 5, 5; ranking A=B &gt; C &gt; D" in page  # cat's answer, for review
    row, heldout_row = board["progress"]
    assert (row["n_items"], row["needed"], row["done"]) == (1, 3, 3)
    assert row["median_s"] == 20.0  # median of 30, 10, 20
    assert heldout_row["median_s"] == 150.0  # median of 100 and 200
    assert per["bob"]["median_s"] == 10.0 and per["ida"]["median_s"] == 200.0


def test_screening_scores_candidates_against_gold(db_url):
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        add_user(app, "cand", status="candidate")
        add_user(app, "ann")
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=1, k=4)
        add_task(admin, pid, "rank", group="screening")
        with app.state.sessions() as s:
            task_id, prompt_id = s.query(crud.Task.id).scalar(), s.query(crud.Prompt.id).scalar()
        gold = rank_form(4, [1, 2, 3, 4], flags={"hallucination"})
        r = post(admin, f"/admin/tasks/{task_id}/gold/{prompt_id}", gold)
        assert r.status_code == 303, r.text
        assert next_assignment(sign_in(app, "ann")) is None  # active labelers skip screening
        cand = sign_in(app, "cand")
        a = next_assignment(cand)
        post(cand, f"/work/{a}", {**rank_form(4, [2, 1, 3, 4]), "client_id": "cand-screen-1"})
        page = admin.get(f"/admin/projects/{pid}").text
        with app.state.sessions() as s:
            (score,) = analytics.screening_scores(s, project=s.get(crud.Project, pid))
        # ranking: 5 of 6 pairs as gold; flags: 4 outputs x 11 flags, hallucination differs
        assert score["ranking_agreement"] == pytest.approx(5 / 6)
        assert score["flag_agreement"] == pytest.approx(40 / 44)
        assert score["score"] == pytest.approx((5 / 6 + 40 / 44) / 2) and score["passed"]
        assert "83.3 %" in page
        r = post(admin, f"/admin/users/{score['user'].id}", {"status": "active"})
        assert r.status_code == 303


def test_invite_link_sets_a_password_once(db_url):
    with app_for(db_url) as (app, client):
        add_user(app, "root", is_admin=True)
        admin = sign_in(app, "root")
        r = post(admin, "/admin/users", {"username": "newbie", "group": "heldout"})
        assert r.status_code == 303
        link = admin.get("/admin").text
        token = link.split("/invite/")[1].split("<")[0].split('"')[0]
        page = client.get(f"/invite/{token}")
        csrf = page_csrf(client, f"/invite/{token}")
        form = {"password": "pw-long-enough", "password2": "pw-long-enough", "csrf_token": csrf}
        assert client.post(f"/invite/{token}", data=form).status_code == 303
        assert client.get("/api/me").json() | {"csrf_token": None} == {
            "username": "newbie", "is_admin": False, "group": "heldout",
            "status": "active", "csrf_token": None,
        }  # fmt: skip
        assert page.status_code == 200 and "Choose a password, newbie" in page.text
        used = client.get(f"/invite/{token}").text  # a used link names no one and has no form
        assert "This invite link is not valid" in used and 'name="password"' not in used
        again = sign_in(app, "root")  # a fresh session: the used token is refused
        r = again.post(f"/invite/{token}", data={**form, "csrf_token": again.csrf})
        assert r.status_code == 422 and "not valid" in r.text
        assert sign_in(app, "newbie", "pw-long-enough")


def test_cli_db_export_feeds_the_pipeline_files(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        _admin, ann, _pid = admin_and_labeler(app)
        post(ann, f"/work/{next_assignment(ann)}", {"response": "Yes.", "client_id": "cli-exp-1"})
    out = tmp_path / "feedback"
    cmd = [
        sys.executable,
        "-m",
        "instructrl.cli",
        "db",
        "export",
        f"db={url}",
        "project=demo",
        f"out={out}",
    ]
    subprocess.run([*cmd, "format=parquet"], check=True, capture_output=True)
    assert [d.response for d in R.read_records(out / "demonstrations.jsonl")] == ["Yes."]
    assert not (out / "preference_pairs.jsonl").exists()  # no comparisons yet: not written
    manifest = json.loads((out / "export.json").read_text())["files"]
    assert manifest["demonstrations.jsonl"] == 1 and manifest["prompts.jsonl"] == 0
    assert not (out / "prompts.jsonl").exists()  # an empty file would not validate
    datasets = pytest.importorskip("datasets")
    table = datasets.load_dataset("parquet", data_files=str(out / "demonstrations.parquet"))
    assert table["train"]["response"] == ["Yes."]
    bad = subprocess.run([*cmd[:-2], "project=nope", f"out={out}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no project 'nope' (projects: demo)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_upload_errors_name_the_file_and_line(db_url):
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        admin = sign_in(app, "root")
        r = post(admin, "/admin/projects", {"name": "x"})
        pid = int(r.headers["location"].rsplit("/", 1)[1])
        bad = jsonl([{"id": "a", "prompt": "ok"}]) + b'{"id": "b"}\n'
        r = post(
            admin, f"/admin/projects/{pid}/prompts", files={"prompts_file": ("mine.jsonl", bad)}
        )
        assert r.status_code == 422
        assert "mine.jsonl:2: prompt:" in r.text and "/tmp" not in r.text


def test_import_forms_read_other_tools_files(db_url):
    """A Label Studio export gives prompts to label; an UltraFeedback-style file gives each
    prompt its completions as outputs to rank; rows left out are said, not dropped silently."""
    from test_importers import labelstudio_export

    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        admin = sign_in(app, "root")
        r = post(admin, "/admin/projects", {"name": "bring"})
        pid = int(r.headers["location"].rsplit("/", 1)[1])
        ls = json.dumps(labelstudio_export()).encode()
        r = post(
            admin,
            f"/admin/projects/{pid}/prompts",
            {"format": "labelstudio"},
            files={"prompts_file": ("project-1.json", ls)},
        )
        assert r.status_code == 303
        page = admin.get(f"/admin/projects/{pid}").text
        assert "2 prompts added; 1 rows of the file left out: project-1.json:task 11 " in page
        uf = [
            {"prompt": f"Q{i}?", "completions": [
                {"response": f"answer {j}", "overall_score": float(j)} for j in range(4)]}
            for i in range(2)
        ] + [{"prompt": "Q9?", "completions": "none"}]  # fmt: skip
        r = post(
            admin,
            f"/admin/projects/{pid}/samples",
            {"format": "datasets"},
            files={"samples_file": ("uf.jsonl", jsonl(uf))},
        )
        assert r.status_code == 303
        page = admin.get(f"/admin/projects/{pid}").text
        assert "8 model outputs attached; 1 rows of the file left out: uf.jsonl:row 3: " in page
        with db.transaction(app.state.sessions) as s:
            rows = s.scalars(select(Prompt).where(Prompt.project_id == pid)).all()
            outputs = {p.key: [o.response for o in p.outputs] for p in rows}
        assert outputs["uf-1"] == [f"answer {j}" for j in range(4)]  # source order, not ranked
        r = post(
            admin,
            f"/admin/projects/{pid}/prompts",
            {"format": "argilla"},
            files={"prompts_file": ("broken.json", b"{not json")},
        )
        assert r.status_code == 422 and "broken.json:1: not valid JSON" in r.text
        assert '<option value="argilla" selected>' in r.text and "/tmp" not in r.text


def _wait_job(admin, job_id: int, timeout_s: float = 180) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        job = admin.get(f"/admin/jobs/{job_id}").json()
        seen.append(job["done"])
        if job["status"] in ("done", "failed"):
            return {**job, "seen": seen}
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s: {job}")


def test_generation_job_attaches_k_outputs_with_progress(tmp_path, tiny_model_dir):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url, jobs_dir=str(tmp_path / "jobs")) as (app, _client):
        add_user(app, "root", is_admin=True)
        admin = sign_in(app, "root")
        pid = int(
            post(admin, "/admin/projects", {"name": "gen"}).headers["location"].rsplit("/", 1)[1]
        )
        files = {
            "prompts_file": (
                "p.jsonl",
                jsonl([{"id": f"g{i}", "prompt": f"Say {i}."} for i in range(3)]),
            )
        }
        post(admin, f"/admin/projects/{pid}/prompts", files=files)
        form = {
            "model": str(tmp_path / "missing"),
            "k": "4",
            "temperature": "1.0",
            "max_new_tokens": "8",
        }
        r = post(admin, f"/admin/projects/{pid}/generate", {**form, "k": "12"})
        assert r.status_code == 422 and "from 4 to 9" in r.text  # beside the K field
        assert post(admin, f"/admin/projects/{pid}/generate", form).status_code == 303
        failed = _wait_job(admin, 1)
        assert failed["status"] == "failed" and "missing" in failed["message"]
        r = post(admin, f"/admin/projects/{pid}/generate", {**form, "model": str(tiny_model_dir)})
        assert r.status_code == 303
        job = _wait_job(admin, 2)
        assert job["status"] == "done", job["message"]
        assert job["done"] == job["total"] == 12 and job["message"] == "12 outputs added"
        with app.state.sessions() as s:
            outputs = s.query(crud.Output).all()
        assert len(outputs) == 12 and {o.position for o in outputs} == {0, 1, 2, 3}
        progress = json.loads((tmp_path / "jobs" / "job-2" / "progress.json").read_text())
        assert progress["done"] == progress["total"] == 12
        add_task(admin, pid, "rank")  # the outputs are rankable


def test_cli_users_add_and_serve(tmp_path):
    import socket
    import time

    import httpx

    url = f"sqlite:///{tmp_path / 'served.db'}"
    cli = [sys.executable, "-m", "instructrl.cli"]
    subprocess.run(
        [*cli, "users", "add", "boss", "--admin", "--password-stdin", f"db={url}"],
        input=PASSWORD + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    short = subprocess.run(
        [*cli, "users", "add", "x", "--password-stdin", f"db={url}"],
        input="short\n", text=True, capture_output=True,
    )  # fmt: skip
    assert short.returncode == 2 and "password: at least 8 characters" in short.stderr
    invite = subprocess.run(
        [*cli, "users", "add", "lee", "--invite", f"db={url}", "base_url=https://label.example/"],
        text=True, check=True, capture_output=True,
    )  # fmt: skip
    assert "invite link for lee (training labeler): https://label.example/invite/" in invite.stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([*cli, "serve", f"db={url}", f"port={port}"], stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        page, deadline = None, time.monotonic() + 60
        while page is None and server.poll() is None and time.monotonic() < deadline:
            try:
                page = httpx.get(f"{base}/login")
            except httpx.ConnectError:
                time.sleep(0.1)
        assert page is not None, f"serve did not answer: exit {server.poll()}"
        assert page.status_code == 200 and "Sign in" in page.text
        secret = tmp_path / "served.secret"
        assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) >= 32
        with httpx.Client(base_url=base) as client:
            token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
            r = client.post(
                "/login", data={"username": "boss", "password": PASSWORD, "csrf_token": token}
            )
            assert r.status_code == 303 and client.get("/api/me").json()["is_admin"] is True
    finally:
        server.terminate()
        server.wait(10)


def test_written_prompts_get_demonstrations_and_rate_tasks_export_ratings(db_url):
    with app_for(db_url) as (app, _client):
        add_user(app, "root", is_admin=True)
        add_user(app, "ann")
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=1, k=4)
        add_task(admin, pid, "write_prompt", count=1)
        add_task(admin, pid, "rate")
        add_task(admin, pid, "demonstration")
        ann = sign_in(app, "ann")
        a = next_assignment(ann)
        assert 'name="prompt"' in ann.get(f"/work/{a}").text
        form = {
            "prompt": "List 3 uses of a brick.",
            "category": "brainstorming",
            "client_id": "write-1",
        }
        assert post(ann, f"/work/{a}", form).status_code == 303
        a = next_assignment(ann)
        form = {f"likert_{i}": str(i + 2) for i in range(4)} | {"flag_0_expresses_opinion": "on"}
        assert post(ann, f"/work/{a}", {**form, "client_id": "rate-1"}).status_code == 303
        texts = []
        while (a := next_assignment(ann)) is not None:
            texts.append(ann.get(f"/work/{a}").text)
            post(ann, f"/work/{a}", {"response": "Done.", "client_id": f"demo-{len(texts)}"})
        assert len(texts) == 2 and "List 3 uses of a brick." in texts[1]
        get = lambda name: admin.get(f"/admin/projects/{pid}/export/{name}.jsonl").text  # noqa: E731
        (written,) = [R.Prompt.from_dict(json.loads(x)) for x in get("prompts").splitlines()]
        ratings = [R.Rating.from_dict(json.loads(x)) for x in get("ratings").splitlines()]
    assert written.prompt == "List 3 uses of a brick." and written.category == "brainstorming"
    assert [r.likert for r in ratings] == [2, 3, 4, 5]
    assert [r.flags["expresses_opinion"] for r in ratings] == [True, False, False, False]


def test_jobs_interrupted_by_a_restart_are_marked_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client), db.transaction(app.state.sessions) as s:
        project = crud.create_project(s, name="p")
        crud.create_job(s, project=project, kind="generate", params={}, total=4)
    with app_for(url) as (app, _client), app.state.sessions() as s:
        (job,) = s.query(crud.Job).all()
        assert job.status == "failed" and "interrupted" in job.message


def test_downgrade_removes_the_schema_and_upgrade_restores_it(db_url):
    from sqlalchemy import inspect

    engine = db.make_engine(db_url)
    db.upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert {
        "users",
        "projects",
        "prompts",
        "outputs",
        "tasks",
        "assignments",
        "submissions",
    } <= tables
    from alembic import command

    command.downgrade(db._alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert set(inspect(engine).get_table_names()) == tables
    engine.dispose()


def test_sign_in_never_redirects_off_site(tmp_path):
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, client):
        add_user(app, "ann")
        token = page_csrf(client, "/login?next=//evil.example/x")
        form = {
            "username": "ann",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/x",
        }
        assert client.post("/login", data=form).headers["location"] == "/"
        anon = client.__class__(app, follow_redirects=False)
        assert anon.get("/work/3").headers["location"] == "/login?next=/work/3"


def test_repeated_wrong_passwords_lock_the_name(tmp_path):
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, client):
        add_user(app, "ann")
        add_user(app, "bob")
        token = page_csrf(client)

        def attempt(name, password):
            form = {"username": name, "password": password, "csrf_token": token}
            return client.post("/login", data=form).status_code

        assert [attempt("ann", f"guess-{i}") for i in range(10)] == [401] * 10
        assert attempt("ann", PASSWORD) == 429  # even the right password, for a while
        assert attempt("bob", PASSWORD) == 303  # other names are not affected


def test_sign_in_lock_expires_and_forgets_names():
    from instructrl.web.routes.auth import FailedSignIns

    now = [0.0]
    failures = FailedSignIns(limit=3, window_s=10.0, clock=lambda: now[0])
    for t in (0.0, 4.0, 8.0):
        now[0] = t
        assert not failures.locked("ann")
        failures.failed("ann")
    assert failures.locked("ann") and not failures.locked("bob")
    now[0] = 10.0  # the failure at 0 s leaves the window: 2 of 3
    assert not failures.locked("ann")
    failures.failed("ann")
    assert failures.locked("ann")
    failures.clear("ann")  # a successful sign-in
    assert not failures.locked("ann")
    for i in range(FailedSignIns.SWEEP_AT):  # guessing many names
        failures.failed(f"name-{i}")
    assert len(failures._times) == FailedSignIns.SWEEP_AT
    now[0] = 30.0
    failures.failed("last")  # sweeps the expired names
    assert list(failures._times) == ["last"]


def test_heldout_labelers_are_exported_apart(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        admin, ann, pid = admin_and_labeler(app, kind="rank")
        add_user(app, "hal", group="heldout")
        add_task(admin, pid, "rank", group="heldout")
        hal = sign_in(app, "hal")
        for client, ranks in ((ann, [1, 2, 3, 4]), (hal, [4, 3, 2, 1])):
            form = {**rank_form(4, ranks), "client_id": f"{ranks[0]}-heldout-test"}
            assert post(client, f"/work/{next_assignment(client)}", form).status_code == 303
        url_of = f"/admin/projects/{pid}/export/comparisons.jsonl"
        training = [json.loads(x) for x in admin.get(url_of).text.splitlines()]
        heldout = [json.loads(x) for x in admin.get(f"{url_of}?group=heldout").text.splitlines()]
        assert admin.get(f"{url_of}?group=screening").status_code == 422
    assert [(c["labeler"], c["ranking"]) for c in training] == [("ann", [0, 1, 2, 3])]
    assert [(c["labeler"], c["labeler_group"]) for c in heldout] == [("hal", "heldout")]
    out = tmp_path / "feedback"
    cmd = [sys.executable, "-m", "instructrl.cli", "-q", "db", "export", f"db={url}"]
    subprocess.run([*cmd, "project=demo", f"out={out}"], check=True, capture_output=True)
    assert [c.labeler for c in R.read_records(out / "comparisons.jsonl")] == ["ann"]
    assert [c.labeler for c in R.read_records(out / "heldout" / "comparisons.jsonl")] == ["hal"]
    assert not (out / "heldout" / "demonstrations.jsonl").exists()


def test_policies_generations_become_outputs_for_human_evaluation(tmp_path):
    """One upload per policy (eval's cached generations): each prompt gets one output per
    policy, even where two policies wrote the same text, and the export names them."""
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, _client):
        add_user(app, "root", is_admin=True)
        add_user(app, "hal", group="heldout")
        admin = sign_in(app, "root")
        pid = int(
            post(admin, "/admin/projects", {"name": "eval"}).headers["location"].rsplit("/", 1)[1]
        )
        for policy, text in (("sft", "Same."), ("ppo", "Same."), ("base", "Other.")):
            row = {"prompt_id": "t1", "prompt": "Q?", "response": text, "model": policy}
            files = {"samples_file": (f"{policy}.jsonl", jsonl([{**row, "finish_reason": "eos"}]))}
            assert post(admin, f"/admin/projects/{pid}/samples", files=files).status_code == 303
        add_task(admin, pid, "rank", group="heldout")
        hal = sign_in(app, "hal")
        form = {**rank_form(3, [2, 2, 1]), "likert_2": "7", "client_id": "hal-eval-1"}
        assert post(hal, f"/work/{next_assignment(hal)}", form).status_code == 303
        text = admin.get(f"/admin/projects/{pid}/export/comparisons.jsonl?group=heldout").text
        rated = admin.get(f"/admin/projects/{pid}/export/ratings.jsonl?group=heldout").text
    (c,) = [R.Comparison.from_dict(json.loads(x)) for x in text.splitlines()]
    assert c.extra["models"] == ["sft", "ppo", "base"] and c.ranking == [2, [0, 1]]
    from instructrl.stages.evaluate import human_outcomes

    assert human_outcomes([c], "ppo", "sft") == [0.5]
    assert human_outcomes([c], "base", "sft") == [1.0]
    from instructrl.stages.evaluate import human_metadata

    ratings = [R.Rating.from_dict(json.loads(x)) for x in rated.splitlines()]
    people = human_metadata(ratings, [R.Prompt(id="t1", prompt="Q?")], seed=0)
    assert {name: likert["mean"] for name, (likert, _) in people.items()} == {
        "sft": 5.0,
        "ppo": 5.0,
        "base": 7.0,
    }


def test_admin_forms_parse_and_explain_by_hand():
    from instructrl.web.schemas import GenerateForm, TaskForm, parse_form

    job, errors = parse_form(
        GenerateForm, {"model": " default ", "k": "5", "max_new_tokens": "48", "csrf_token": "x"}
    )
    assert errors == {} and job.model_dump() == {
        "model": "default",
        "k": 5,
        "max_new_tokens": 48,
        "temperature": 1.0,  # the default when the field is left empty
    }
    _, errors = parse_form(GenerateForm, {"model": "", "k": "12", "temperature": "0"})
    assert errors == {
        "model": "'default', an HF model directory, or a cached hub id",
        "k": "a whole number from 4 to 9",
        "max_new_tokens": "a whole number from 1 to 4096",
        "temperature": "a number in (0, 2]",
    }
    task, errors = parse_form(TaskForm, {"kind": "rank", "per_item": "3", "count": "7"})
    assert errors == {} and (task.per_item, task.count) == (3, 0)  # count only for write_prompt
    _, errors = parse_form(TaskForm, {"kind": "write_prompt", "per_item": "0"})
    assert errors == {
        "per_item": "a whole number from 1 to 100",
        "count": "a whole number from 1 to 100000",
    }


def test_typed_text_is_normalised_and_all_tied_rankings_are_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        admin, ann, pid = admin_and_labeler(app, n=2)
        add_task(admin, pid, "rank")
        text = "First line.\r\n  Indented second line.  \r\n\r\n"
        r = post(ann, f"/work/{next_assignment(ann)}", {"response": text, "client_id": "crlf-01"})
        assert r.status_code == 303
        (demo,) = [
            json.loads(x)
            for x in admin.get(
                f"/admin/projects/{pid}/export/demonstrations.jsonl"
            ).text.splitlines()
        ]
        assert demo["response"] == "First line.\n  Indented second line."
        post(ann, f"/work/{next_assignment(ann)}", {"response": "Two.", "client_id": "crlf-02"})
        rank = next_assignment(ann)
        r = post(ann, f"/work/{rank}", {**rank_form(4, [1, 1, 1, 1]), "client_id": "tied-01"})
        assert r.status_code == 422 and "every output is tied" in r.text
        r = post(ann, f"/work/{rank}", {**rank_form(4, [1, 1, 2, 2]), "client_id": "tied-01"})
        assert r.status_code == 303


def test_bad_urls_get_html_pages_and_there_is_a_favicon(tmp_path):
    with app_for(f"sqlite:///{tmp_path / 'f.db'}") as (app, _client):
        add_user(app, "ann")
        ann = sign_in(app, "ann")
        html = {"accept": "text/html"}
        for path in ("/work/abc", "/no/such/page"):
            r = ann.get(path, headers=html)
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
            assert "<html" in r.text and "detail" not in r.text[:50]
        api = ann.get("/api/assignments/abc")
        assert (
            api.status_code in (404, 405, 422) and api.headers["content-type"] == "application/json"
        )
        icon = ann.get("/favicon.ico", follow_redirects=True)
        assert icon.status_code == 200 and icon.text.startswith("<svg")


def test_idle_claims_go_back_to_the_queue_and_admins_release_claims(tmp_path):
    from datetime import timedelta

    from instructrl.web.models import now

    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url, claim_minutes=30) as (app, _client):
        admin, ann, pid = admin_and_labeler(app, n=1)  # one prompt, one labeler per item
        add_user(app, "bob")
        bob = sign_in(app, "bob")
        mine = next_assignment(ann)
        assert next_assignment(bob) is None  # the only item is ann's
        page = admin.get(f"/admin/projects/{pid}").text
        assert "<td>1</td><td>0</td>" in page  # 1 in progress, 0 open
        assert ann.get(f"/work/{mine}").status_code == 200  # activity keeps the claim
        with db.transaction(app.state.sessions) as s:
            s.get(Assignment, mine).active_at = now() - timedelta(minutes=31)
        taken = next_assignment(bob)  # idle for 31 > 30 minutes: released, bob takes it
        with db.transaction(app.state.sessions) as s:
            assert s.get(Assignment, taken).user.username == "bob"
        r = ann.get(f"/work/{mine}")
        assert r.status_code == 403 and "went back to the queue" in r.text
        page = admin.get(f"/admin/projects/{pid}").text
        assert 'id="claims"' in page and "<td>bob</td>" in page
        add_user(app, "cy")
        add_user(app, "hal", group="heldout")
        r = post(admin, f"/admin/assignments/{taken}/reassign", {"username": "hal"})
        assert r.status_code == 422 and "no active training labeler named 'hal'" in r.text
        r = post(admin, f"/admin/assignments/{taken}/reassign", {"username": "bob"})
        assert r.status_code == 422 and "bob has had this item already" in r.text
        assert (
            post(admin, f"/admin/assignments/{taken}/reassign", {"username": "cy"}).status_code
            == 303
        )
        cy = sign_in(app, "cy")
        assert next_assignment(cy) == taken and next_assignment(bob) is None  # cy's now
        assert post(admin, f"/admin/assignments/{taken}/release").status_code == 303
        assert 'id="claims"' not in admin.get(f"/admin/projects/{pid}").text
        again = next_assignment(ann)  # back in the queue: ann may take it again
        r = post(ann, f"/work/{again}", {"response": "Done.", "client_id": "claim-0001"})
        assert r.status_code == 303
        assert post(admin, f"/admin/assignments/{again}/release").status_code == 409


def test_tasks_cover_chosen_prompts_and_pause_resume_and_edit(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        add_user(app, "root", is_admin=True)
        add_user(app, "ann")
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=3)  # p0, p1, p2
        add_task(admin, pid, "demonstration", title="chosen", covers="ids", covers_value="p2, p0")
        add_task(admin, pid, "demonstration", title="now")  # covers=all_now, the default
        add_task(admin, pid, "demonstration", title="later", covers="all_later")
        r = post(admin, f"/admin/projects/{pid}/tasks",
                 {"title": "x", "kind": "demonstration", "group": "training", "per_item": 1,
                  "covers": "ids", "covers_value": "p9"})  # fmt: skip
        assert r.status_code == 422 and "no such prompt ids in this project: p9" in r.text
        files = {"prompts_file": ("more.jsonl", jsonl([{"id": "p3", "prompt": "New one?"}]))}
        post(admin, f"/admin/projects/{pid}/prompts", files=files)  # imported after the tasks
        with db.transaction(app.state.sessions) as s:
            tasks = {t.title: t for t in s.scalars(select(crud.Task))}
            items = {
                title: sorted(
                    s.get(Prompt, i).key for i in crud.task_items(s, task=t)
                )
                for title, t in tasks.items()
            }  # fmt: skip
            ids = {title: t.id for title, t in tasks.items()}
        assert items == {
            "chosen": ["p0", "p2"],
            "now": ["p0", "p1", "p2"],  # p3 came later: not in it
            "later": ["p0", "p1", "p2", "p3"],
        }
        for title in ("chosen", "now", "later"):  # paused tasks are not served
            assert post(admin, f"/admin/tasks/{ids[title]}", {"state": "paused"}).status_code == 303
        ann = sign_in(app, "ann")
        assert next_assignment(ann) is None
        post(admin, f"/admin/tasks/{ids['later']}", {"state": "active"})
        post(admin, f"/admin/tasks/{ids['later']}", {"instructions": "Answer in French.\r\n"})
        a = next_assignment(ann)
        assert a is not None and "Answer in French." in ann.get(f"/work/{a}").text
        page = admin.get(f"/admin/projects/{pid}").text
        assert page.count("<option selected>paused</option>") == 2
        assert post(admin, f"/admin/tasks/{ids['later']}", {"state": "gone"}).status_code == 422


def test_skip_with_a_reason_frees_the_item_and_pages_say_where_you_are(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        admin, ann, pid = admin_and_labeler(app, n=2)
        add_user(app, "bob")
        first = next_assignment(ann)
        assert 'id="position">item 1 of 2<' in ann.get(f"/work/{first}").text
        r = post(ann, f"/work/{first}/skip", {"reason": "other"})
        assert r.status_code == 422 and "say which reason" in r.text
        r = post(ann, f"/work/{first}/skip", {"reason": "cannot_judge"})
        assert r.status_code == 303
        second = next_assignment(ann)  # never asked again; the next item
        page = ann.get(f"/work/{second}").text
        assert 'id="position">item 2 of 2<' in page and "skipped: here is the next item" in page
        r = post(ann, f"/work/{second}", {"response": "Fine.", "client_id": "skip-0001"})
        assert r.status_code == 303 and "saved: thank you" in ann.get("/work").text
        assert next_assignment(ann) is None
        bob = sign_in(app, "bob")
        freed = next_assignment(bob)  # the skipped item's slot went back to the queue
        assert freed is not None
        assert post(ann, f"/work/{first}/skip", {"reason": "cannot_judge"}).status_code == 409
        with db.transaction(app.state.sessions) as s:
            skipped = s.scalars(select(Assignment).where(Assignment.status == "skipped")).all()
            assert [(a.user.username, a.skip_reason) for a in skipped] == [("ann", "cannot_judge")]
        page = admin.get(f"/admin/projects/{pid}").text
        assert "<td>1</td><td>0</td><td>1</td>" in page  # in progress (bob), open, skipped


def test_review_filters_rejects_and_requeues_and_finds_disagreement(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        add_user(app, "root", is_admin=True)
        for name in ("ann", "bob", "cy"):
            add_user(app, name)
        admin = sign_in(app, "root")
        pid = project_with_outputs(admin, n=2, k=4)
        add_task(admin, pid, "rank", per_item=2)
        ann, bob, cy = (sign_in(app, n) for n in ("ann", "bob", "cy"))
        # p0: ann and bob rank in opposite orders (6 of 6 response pairs conflict);
        # p1: they agree. The most disagreed item is p0.
        orders = {("ann", "p0"): [1, 2, 3, 4], ("bob", "p0"): [4, 3, 2, 1],
                  ("ann", "p1"): [1, 2, 3, 4], ("bob", "p1"): [1, 2, 3, 4]}  # fmt: skip
        for name, client in (("ann", ann), ("bob", bob)):
            for _ in range(2):
                a = next_assignment(client)
                key = "p0" if "Question number 0?" in client.get(f"/work/{a}").text else "p1"
                form = {**rank_form(4, orders[(name, key)]), "client_id": f"{name}-{key}-review"}
                assert post(client, f"/work/{a}", form).status_code == 303
        page = admin.get(f"/admin/projects/{pid}/review").text
        assert page.count('class="answer') == 4 and "Answer 3 to p1." in page  # outputs whole
        table = page.split('id="disagreement"')[1].split("</table>")[0]
        assert table.index("p0") < table.index("p1") and "100 % of 6" in table
        only = admin.get(f"/admin/projects/{pid}/review?labeler=bob&item=p0").text
        assert only.count('class="answer') == 1
        assert admin.get(f"/admin/projects/{pid}/review?since=yesterday").status_code == 422
        future = admin.get(f"/admin/projects/{pid}/review?since=2999-01-01").text
        assert "No answer matches." in future
        sub_id = int(only.split('id="answer-')[1].split('"')[0])
        assert post(admin, f"/admin/submissions/{sub_id}/reject", {"reason": ""}).status_code == 422
        r = post(admin, f"/admin/submissions/{sub_id}/reject", {"reason": "reversed by mistake"})
        assert r.status_code == 303
        page = admin.get(f"/admin/projects/{pid}/review").text
        assert "Rejected: reversed by mistake" in page
        export = admin.get(f"/admin/projects/{pid}/export/comparisons.jsonl").text.splitlines()
        assert len(export) == 3  # the rejected answer is left out
        a = next_assignment(cy)  # the rejected item went back to the queue
        assert a is not None and "Question number 0?" in cy.get(f"/work/{a}").text
        assert next_assignment(bob) is None  # bob is not asked again
        assert (
            post(admin, f"/admin/submissions/{sub_id}/reject", {"reason": "x"}).status_code == 409
        )


def test_labelers_pick_a_task_with_counts(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with app_for(url) as (app, _client):
        admin, ann, pid = admin_and_labeler(app, n=2)  # a demonstration task first
        add_task(admin, pid, "rank", title="Rank them")
        page = ann.get("/tasks").text
        rows = page.split('id="choices"')[1].split("</table>")[0]
        assert "<td>demonstration task</td><td>demonstration</td><td>demo</td><td>2</td>" in rows
        with db.transaction(app.state.sessions) as s:
            rank_id = s.scalar(select(crud.Task.id).where(crud.Task.title == "Rank them"))
        r = ann.get(f"/work?task={rank_id}")  # not the oldest task: the one she picked
        assert r.status_code == 303 and 'data-kind="rank"' in ann.get(r.headers["location"]).text
        assignment = int(r.headers["location"].rsplit("/", 1)[1])
        post(ann, f"/work/{assignment}", {**rank_form(4, [1, 2, 3, 4]), "client_id": "pick-0001"})
        assert "<td>Rank them</td><td>rank</td><td>demo</td><td>1</td>" in ann.get("/tasks").text
        post(ann, f"/work/{ann.get(f'/work?task={rank_id}').headers['location'].rsplit('/', 1)[1]}",
             {**rank_form(4, [1, 2, 3, 4]), "client_id": "pick-0002"})  # fmt: skip
        done = ann.get(f"/work?task={rank_id}")
        assert done.status_code == 200 and "Nothing left in that task" in done.text
        assert "Rank them" not in ann.get("/tasks").text


def test_a_server_killed_mid_load_loses_no_acknowledged_answer(db_url):
    """bench/web.py at CI size: 5 labelers x 10 answers, the server SIGKILLed after 20
    acknowledged answers and restarted; every answer stored exactly once (SQLite and
    PostgreSQL)."""
    from pathlib import Path

    bench = Path(__file__).parents[1] / "bench" / "web.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--db", db_url, "--labelers", "5", "--submissions", "10",
         "--kill-after", "20"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["killed_after"] >= 20 and figures["exactly_once"] is True
    assert figures["stored"] == 50 and figures["assignments_answered_twice"] == 0


def test_a_database_restart_mid_load_fails_cleanly_and_loses_nothing(db_url):
    """PostgreSQL restarted (bash .ci/postgres.sh restart) after 20 acknowledged answers of 5
    labelers x 10: the app answers 503 without a traceback meanwhile, reconnects, and every
    answer is stored exactly once."""
    from pathlib import Path

    if not db_url.startswith("postgresql"):
        pytest.skip("a database restart is a server database's fault (SQLite is a file)")
    root = Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "web.py"), "--db", db_url, "--labelers", "5",
         "--submissions", "10", "--kill-after", "20",
         "--restart-db", f"bash {root / '.ci' / 'postgres.sh'} restart"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["exactly_once"] is True and figures["stored"] == 50
    assert "database restarted after" in done.stdout
