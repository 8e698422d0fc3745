"""Load bench for the feedback app: 20 concurrent labelers x 50 submissions on loopback.

    python bench/web.py                                  # SQLite file in a temp dir
    python bench/web.py --db postgresql+psycopg://postgres@127.0.0.1:54329/bench
    python bench/web.py --labelers 20 --submissions 50 --retry-every 5
    python bench/web.py --kill-after 300      # SIGKILL the server mid-load, restart it

`instructrl serve` runs in its own process (uvicorn, one worker); each labeler is a thread with
its own HTTP client and session: sign in, then repeatedly GET /api/next and POST the answer to
/api/assignments/ID/submission. Every `--retry-every`-th answer is posted twice with the same
client id (a network retry), which must not store a second copy. Prints p50/p95 latency of the
submissions and of fetching the next task, the throughput, and checks in the database that every
answer is stored exactly once.

With `--kill-after N` the server is killed (SIGKILL) once N answers are acknowledged and started
again on the same port; labelers whose request met the dead server send the same request again
(same client id) until it answers: every answer acknowledged before or after is stored exactly
once, and a retry of one stored just before the kill gets that first copy back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PASSWORD = "bench-password-1"


def _prepare(url: str, labelers: int, items: int) -> None:
    from instructrl import records as R
    from instructrl.web import crud, db

    engine = db.make_engine(url)
    db.upgrade(engine)
    with db.transaction(db.session_factory(engine)) as s:
        for i in range(labelers):
            crud.create_user(s, username=f"labeler{i:02d}", password=PASSWORD)
        project = crud.create_project(s, name="bench")
        prompts = [
            R.Prompt(id=f"b{i}", prompt=f"Bench prompt {i}: say something.") for i in range(items)
        ]
        crud.import_prompts(s, project=project, prompts=prompts)
        crud.create_task(s, project=project, kind="demonstration", title="bench", per_item=1)
    engine.dispose()


def _wait_up(base: str) -> None:
    for _ in range(400):
        try:
            httpx.get(f"{base}/login")
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"the server at {base} did not answer")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _again(send, deadline_s: float = 120.0):
    """`send()` until the server answers, and answers other than 503: a request that met a
    killed server, or a server whose database is restarting, is sent again."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            reply = send()
            if reply.status_code != 503:
                return reply
            assert "Traceback" not in reply.text, reply.text
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("no answer within the deadline")
        time.sleep(0.05)


def _labeler(
    base: str, index: int, n: int, retry_every: int, out: dict, errors: list, start
) -> None:
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            page = client.get("/login").text
            token = page.split('name="csrf_token" value="')[1].split('"')[0]
            r = client.post(
                "/login",
                data={"username": f"labeler{index:02d}", "password": PASSWORD, "csrf_token": token},
            )
            assert r.status_code == 303, r.text
            headers = {"X-CSRF-Token": client.get("/api/me").json()["csrf_token"]}
            start.wait()  # everyone signed in (argon2 is slow on purpose): then the clock runs
            for j in range(n):
                t0 = time.perf_counter()
                task = _again(lambda: client.get("/api/next"))
                out["next_s"].append(time.perf_counter() - t0)
                assert task.status_code == 200, task.text
                body = {
                    "client_id": f"bench-{index:02d}-{j:04d}",
                    "payload": {"response": f"answer {j} from labeler {index}"},
                }
                url = f"/api/assignments/{task.json()['id']}/submission"
                t0 = time.perf_counter()
                tries = [0]

                def send(url=url, body=body, tries=tries):
                    tries[0] += 1
                    return client.post(url, json=body, headers=headers)

                r = _again(send)
                out["submit_s"].append(time.perf_counter() - t0)
                # 201 stored now; 200 only when a request lost in a kill had stored it already
                assert r.status_code == 201 or (tries[0] > 1 and r.status_code == 200), r.text
                out["resent"] += tries[0] > 1
                out["sent"].append(body["client_id"])
                if retry_every and j % retry_every == 0:
                    again = _again(
                        lambda url=url, body=body: client.post(url, json=body, headers=headers)
                    )
                    assert again.status_code == 200 and again.json()["created"] is False, again.text
                    out["retries"] += 1
    except BaseException as e:
        start.abort()
        errors.append(e)


def _check(url: str, sent: list[str]) -> dict:
    from sqlalchemy import func, select

    from instructrl.web import db
    from instructrl.web.models import Assignment, Submission

    engine = db.make_engine(url)
    with db.session_factory(engine)() as s:
        stored = list(s.scalars(select(Submission.client_id)))
        done = s.scalar(select(func.count()).where(Assignment.status == "done"))
        doubled = s.scalar(
            select(func.count()).select_from(
                select(Submission.assignment_id)
                .group_by(Submission.assignment_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
    engine.dispose()
    return {
        "stored": len(stored),
        "exactly_once": sorted(stored) == sorted(sent),
        "assignments_done": done,
        "assignments_answered_twice": doubled,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--labelers", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=50, help="per labeler")
    parser.add_argument("--retry-every", type=int, default=5, help="post every N-th answer twice")
    parser.add_argument(
        "--kill-after", type=int, default=0, help="SIGKILL and restart the server after N answers"
    )
    parser.add_argument(
        "--restart-db",
        default="",
        help="a command that restarts the database (e.g. 'bash .ci/postgres.sh restart'), run "
        "after --kill-after N answers instead of killing the server",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="instructrl-bench-web-"))
    url = args.db or f"sqlite:///{tmp / 'bench.db'}"
    _prepare(url, args.labelers, args.labelers * args.submissions)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "instructrl.cli", "-q", "serve", f"db={url}",
               f"port={port}", f"secret_key={'x' * 40}", f"jobs_dir={tmp / 'jobs'}"]  # fmt: skip
    server = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base)
        out = {"next_s": [], "submit_s": [], "sent": [], "retries": 0, "resent": 0}
        errors: list[BaseException] = []
        start = threading.Barrier(args.labelers + 1)
        threads = [
            threading.Thread(
                target=_labeler,
                args=(base, i, args.submissions, args.retry_every, out, errors, start),
            )
            for i in range(args.labelers)
        ]
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait()
        t0 = time.perf_counter()
        killed_at = None
        if args.kill_after:
            while len(out["sent"]) < args.kill_after and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            killed_at = len(out["sent"])
            if args.restart_db:  # the database goes away under load, the server stays
                subprocess.run(args.restart_db, shell=True, check=True)
            else:
                server.kill()  # SIGKILL: no shutdown, no flush
                server.wait(10)
                server = subprocess.Popen(command)
                _wait_up(base)
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(10)
    if errors:
        print(f"FAILED: {len(errors)} labelers stopped; first: {errors[0]!r}")
        return 1
    check = _check(url, out["sent"])
    kind = url.split(":", 1)[0]
    n = len(out["submit_s"])
    print(f"feedback app load, {kind}: {args.labelers} labelers x {args.submissions} submissions "
          f"({out['retries']} retried with the same client id), 1 uvicorn worker, loopback")  # fmt: skip
    for name in ("submit_s", "next_s"):
        v = out[name]
        print(
            f"  {name[:-2]:7s} p50 {1000 * statistics.median(v):6.1f} ms   "
            f"p95 {1000 * _percentile(v, 0.95):6.1f} ms   max {1000 * max(v):6.1f} ms"
        )
    print(
        f"  {n} submissions in {wall:.1f} s: {n / wall:.0f} submissions/s (with the next-task calls)"
    )
    if killed_at is not None:
        what = "database restarted" if args.restart_db else "server killed (SIGKILL) and restarted"
        print(
            f"  {what} after {killed_at} acknowledged answers; "
            f"{out['resent']} requests sent again (no answer, or 503)"
        )
    print(
        f"  database: {check['stored']} stored, exactly once: {check['exactly_once']}, "
        f"assignments done {check['assignments_done']}, answered twice {check['assignments_answered_twice']}"
    )
    ok = check["exactly_once"] and check["stored"] == n and not check["assignments_answered_twice"]
    print("PASS" if ok else "FAIL")
    figures = {
        "db": kind,
        "labelers": args.labelers,
        "submissions": n,
        "submit_p50_ms": round(1000 * statistics.median(out["submit_s"]), 1),
        "submit_p95_ms": round(1000 * _percentile(out["submit_s"], 0.95), 1),
        "next_p50_ms": round(1000 * statistics.median(out["next_s"]), 1),
        "next_p95_ms": round(1000 * _percentile(out["next_s"], 0.95), 1),
        "submissions_per_s": round(n / wall, 1),
        "killed_after": killed_at,
        "resent": out["resent"],
        **check,
    }
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
