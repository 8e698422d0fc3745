"""A person's path through the app in a real browser: Playwright drives Debian's chromium.

An admin imports prompts and model outputs and creates tasks; a labeler writes demonstrations,
rates 4 outputs and ranks them by drag and drop (and by keys); the admin exports; the exported
JSONL validates and trains a reward-model step on a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time

import pytest
from conftest import needs
from webutil import PASSWORD, add_user, jsonl, prompts, samples

from instructrl import records as R
from instructrl.config import ServeConfig
from instructrl.web import db
from instructrl.web.app import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def live_app(tmp_path):
    """The app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    app = create_app(ServeConfig(db=url, secret_key="b" * 40, jobs_dir=str(tmp_path / "jobs")))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield app, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        needs("chromium", "apt-get install chromium (Debian's browser, driven by Playwright)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs("playwright", "pip install playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()


def test_label_rank_by_drag_and_drop_export_and_train(live_app, browser, tmp_path, tiny_model_dir):
    app, base = live_app
    add_user(app, "root", is_admin=True)
    add_user(app, "ann")
    (tmp_path / "prompts.jsonl").write_bytes(jsonl(prompts(2)))
    (tmp_path / "samples.jsonl").write_bytes(jsonl(samples(["p0", "p1"], k=4)))

    page = browser.new_page()
    # admin: a project, prompts, outputs, a demonstration task and a ranking task
    _sign_in(page, base, "root")
    assert page.url.endswith("/admin")
    page.fill("form[action='/admin/projects'] input[name=name]", "browser")
    page.fill("form[action='/admin/projects'] textarea[name=instructions]", "Prefer truthful.")
    page.click("button:has-text('Create project')")
    project_url = page.url
    page.set_input_files("input[name=prompts_file]", str(tmp_path / "prompts.jsonl"))
    page.click("button:has-text('Import prompts')")
    assert "2 prompts added" in page.inner_text(".flash")
    page.set_input_files("input[name=samples_file]", str(tmp_path / "samples.jsonl"))
    page.click("button:has-text('Import outputs')")
    assert "8 model outputs attached" in page.inner_text(".flash")
    for kind, title in (("demonstration", "Write answers"), ("rank", "Rank answers")):
        page.fill("form[action$='/tasks'] input[name=title]", title)
        page.select_option("form[action$='/tasks'] select[name=kind]", kind)
        page.click("button:has-text('Create task')")
        assert "task created" in page.inner_text(".flash")
    page.click("button:has-text('Sign out')")

    # labeler: two demonstrations (one sent with Ctrl+Enter), then rate and rank
    _sign_in(page, base, "ann")
    page.goto(f"{base}/work")
    assert "Prefer truthful." in page.inner_text("aside.instructions")
    page.fill("textarea[name=response]", "Zero is the answer.")
    page.keyboard.press("Control+Enter")
    page.wait_for_url("**/work/*")
    page.fill("textarea[name=response]", "One is the answer.")
    page.click("#submit")
    page.wait_for_url("**/work/*")
    assert page.locator(".rank-card").count() == 4
    for i, score in enumerate([6, 7, 5, 2]):
        page.check(f"input[name=likert_{i}][value='{score}']")
    page.click("#output-3 summary")
    page.check("input[name=flag_3_hallucination]")
    page.drag_and_drop("#card-1", "#lane-1")
    page.drag_and_drop("#card-0", "#lane-2")
    page.drag_and_drop("#card-2", "#lane-2")  # a tie with A
    page.focus("#card-3")
    page.keyboard.press("4")  # by key
    assert [page.input_value(f"#rank_{i}") for i in range(4)] == ["2", "1", "2", "4"]
    assert page.locator("#lane-2 .rank-card").count() == 2
    page.screenshot(path=str(tmp_path / "rank.png"), full_page=True)
    page.click("#submit")
    page.wait_for_url("**/work/*")
    # the second ranking entirely by keyboard, with a missing score shown beside its field
    for i in range(4):
        page.focus(f"#card-{i}")
        page.keyboard.press(str(i + 1))
    for i in range(3):
        page.check(f"input[name=likert_{i}][value='4']")
    page.click("#submit")
    page.wait_for_load_state()
    assert "choose an overall score" in page.inner_text("#error-likert_3")
    assert page.evaluate("document.activeElement.name") == "likert_3"  # the first error
    assert page.input_value("#rank_2") == "3"  # input kept
    page.focus("#card-0")
    page.keyboard.press("9")  # above K = 4: nothing happens
    assert page.input_value("#rank_0") == "1"
    page.focus("input[name=likert_3][value='1']")
    page.keyboard.press("3")  # Likert by key, in the focused output
    assert page.is_checked("input[name=likert_3][value='3']")
    page.click("#submit")
    page.wait_for_load_state()
    assert "Nothing to do" in page.inner_text("h1")
    page.click("button:has-text('Sign out')")

    # admin: progress and export
    _sign_in(page, base, "root")
    page.goto(project_url)
    assert "2 / 2" in page.inner_text("#progress")
    files = {}
    for name in ("demonstrations", "comparisons", "ratings"):
        with page.expect_download() as info:
            page.click(f"a[href$='/export/{name}.jsonl']")
        files[name] = tmp_path / "feedback" / f"{name}.jsonl"
        info.value.save_as(files[name])

    demos = R.read_records(files["demonstrations"], "demonstration")
    assert [d.response for d in demos] == ["Zero is the answer.", "One is the answer."]
    comparisons = R.read_records(files["comparisons"], "comparison")
    assert [c.ranking for c in comparisons] == [[1, [0, 2], 3], [0, 1, 2, 3]]
    ratings = R.read_records(files["ratings"], "rating")
    assert [r.likert for r in ratings] == [6, 7, 5, 2, 4, 4, 4, 3]
    assert [r.flags["hallucination"] for r in ratings[:4]] == [False, False, False, True]

    from instructrl.config import RMConfig, load_config
    from instructrl.stages import reward

    out = reward.run(
        load_config(
            RMConfig,
            [
                f"model={tiny_model_dir}",
                f"data={files['comparisons']}",
                f"demos={files['demonstrations']}",
                f"out={tmp_path / 'rm'}",
                "max_steps=1",
                "val_fraction=0",
            ],
        )
    )
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["rm/loss"] for r in rows if "rm/loss" in r]
    assert losses and all(0 < x < 10 for x in losses)
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 1


CONTRAST = """(el) => {
  const lum = (rgb) => {
    const c = rgb.match(/\\d+/g).slice(0, 3).map(Number).map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const a = lum(getComputedStyle(el).borderTopColor), b = lum("rgb(255, 255, 255)");
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_a_phone_sized_screen_and_control_contrast(live_app, browser):
    """At 390 px the instructions come before the task and admin tables scroll inside their
    box (the page itself does not scroll sideways); controls' borders reach 3:1 contrast."""
    from sqlalchemy import select
    from webutil import admin_and_labeler, next_assignment

    from instructrl.web.models import Task

    app, base = live_app
    _admin, ann, pid = admin_and_labeler(app, n=1, kind="rank")
    with db.transaction(app.state.sessions) as s:  # a long row: the admin table is wide
        s.scalars(select(Task)).first().title = "a-very-long-task-title-" * 6
    assignment = next_assignment(ann)
    page = browser.new_page(viewport={"width": 390, "height": 844})
    _sign_in(page, base, "ann")
    page.goto(f"{base}/work/{assignment}")
    aside, form = (
        page.locator("aside.instructions").bounding_box(),
        page.locator("#task-form").bounding_box(),
    )
    assert aside["y"] < form["y"]  # instructions first on a phone
    assert page.locator(".lane").first.evaluate(CONTRAST) >= 3.0
    page.click("button:has-text('Sign out')")
    _sign_in(page, base, "root")
    page.goto(f"{base}/admin/projects/{pid}")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    wide = page.evaluate(
        "Array.from(document.querySelectorAll('body *')).filter((e) => e.getBoundingClientRect()"
        ".right > 391 && !e.closest('table')).slice(0, 5).map((e) => e.tagName + '.' + e.className"
        " + ' ' + Math.round(e.getBoundingClientRect().right))"
    )
    assert width <= 390 + 1, f"the page scrolls sideways: {width} px ({wide})"
    assert page.locator("input[name=title]").evaluate(CONTRAST) >= 3.0
    assert page.locator("select[name=kind]").evaluate(CONTRAST) >= 3.0


def test_sign_out_skip_review_and_reject_in_the_browser(live_app, browser):
    from webutil import admin_and_labeler

    app, base = live_app
    admin_and_labeler(app, n=2)  # root, ann, a project of 2 prompts, a demonstration task
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, base, "ann")
    page.goto(f"{base}/work")
    page.click("details.skip summary")
    page.select_option("select[name=reason]", "cannot_judge")
    page.click("button:has-text('Skip')")
    page.wait_for_load_state()
    assert "skipped: here is the next item" in page.inner_text(".flash")
    assert "item 2 of 2" in page.inner_text("#position")
    page.fill("textarea[name=response]", "Typed in the browser.")
    page.click("#submit")
    page.wait_for_load_state()
    assert "saved: thank you" in page.inner_text(".flash")
    saved = context.cookies()
    page.click("button:has-text('Sign out')")
    page.wait_for_load_state()
    thief = browser.new_context()  # a copy of the signed-in cookie, used after sign-out
    thief.add_cookies(saved)
    stolen = thief.new_page()
    stolen.goto(f"{base}/work")
    assert "/login" in stolen.url
    thief.close()

    _sign_in(page, base, "root")
    page.goto(f"{base}/admin")
    page.click("a:has-text('demo')")
    page.click("a:has-text('Review answers')")
    assert "Typed in the browser." in page.inner_text("article.answer")
    page.fill("article.answer input[name=reason]", "too short")
    page.click("button:has-text('Reject and requeue')")
    page.wait_for_load_state()
    assert "rejected: its item is back in the queue" in page.inner_text(".flash")
    assert "Rejected: too short" in page.inner_text("article.answer")
    context.close()


def test_an_idle_claim_expires_and_the_admin_releases_it_in_the_browser(live_app, browser):
    """ann opens the only item and walks away: after claim_minutes without activity bob gets
    it, ann's late submit is refused with the reason, and the admin releases bob's claim."""
    from datetime import timedelta

    from webutil import admin_and_labeler

    from instructrl.web.models import Assignment, now

    app, base = live_app
    _, _, pid = admin_and_labeler(app, n=1)
    add_user(app, "bob")
    add_user(app, "boss", is_admin=True)
    ann = browser.new_context().new_page()
    _sign_in(ann, base, "ann")
    ann.goto(f"{base}/work")
    ann.fill("textarea[name=response]", "Written slowly.")
    with db.transaction(app.state.sessions) as s:  # 31 minutes without activity
        [claim] = s.query(Assignment).all()
        claim.active_at = now() - timedelta(minutes=31)
    bob = browser.new_context().new_page()
    _sign_in(bob, base, "bob")
    bob.goto(f"{base}/work")
    assert bob.locator("textarea[name=response]").count() == 1  # the item is bob's now
    ann.click("#submit")
    ann.wait_for_load_state()
    assert "went back to the queue" in ann.inner_text("body")
    admin = browser.new_context().new_page()
    _sign_in(admin, base, "boss")
    admin.goto(f"{base}/admin/projects/{pid}")
    assert "bob" in admin.inner_text("#claims")
    admin.click("#claims button:has-text('Release')")
    admin.wait_for_load_state()
    assert admin.locator("#claims").count() == 0
    with db.transaction(app.state.sessions) as s:
        assert s.query(Assignment).filter(Assignment.status == "done").count() == 0
