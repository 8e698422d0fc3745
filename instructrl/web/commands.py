"""What `instructrl serve`, `instructrl db ...` and `instructrl users add` do."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from instructrl import exporters
from instructrl.config import DBConfig, ServeConfig
from instructrl.errors import UserError
from instructrl.records import write_records
from instructrl.web import crud, db
from instructrl.web import export as exports
from instructrl.web.app import create_app
from instructrl.web.models import Project, User

log = logging.getLogger("instructrl")


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    engine = db.make_engine(cfg.db)
    db.check_schema(engine)
    engine.dispose()
    app = create_app(cfg)
    log.info("feedback app on http://%s:%d (database %s)", cfg.host, cfg.port, _shown(cfg.db))
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def upgrade(cfg: DBConfig) -> None:
    engine = db.make_engine(cfg.db)
    before = db.current_revision(engine)
    db.upgrade(engine)
    after = db.current_revision(engine)
    engine.dispose()
    log.info("%s: schema %s -> %s", _shown(cfg.db), before or "empty", after)


def export(cfg: DBConfig) -> Path:
    from sqlalchemy import select

    if not cfg.project or not cfg.out:
        raise UserError("db export: expected project=NAME and out=DIR")
    engine = db.make_engine(cfg.db)
    db.check_schema(engine, create_if_empty=False)
    with db.transaction(db.session_factory(engine)) as s:
        project = s.scalar(select(Project).where(Project.name == cfg.project))
        if project is None:
            names = ", ".join(s.scalars(select(Project.name))) or "none"
            raise UserError(f"db export: no project {cfg.project!r} (projects: {names})")
        training = exports.records(s, project=project, group="training")
        heldout = exports.records(s, project=project, group="heldout")
    engine.dispose()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {**training, "preference_pairs": exporters.preference_pairs(training["comparisons"])}
    # held-out labelers' answers: the RM's held-out accuracy, never training
    files.update({f"heldout/{name}": records for name, records in heldout.items()})
    manifest = {"project": cfg.project, "files": {}}
    for name, records in files.items():
        path = out / f"{name}.jsonl"
        path.unlink(missing_ok=True)  # no stale file from an earlier export
        if records:  # an empty file is no valid records file: the manifest says it is empty
            write_records(path, records)
        manifest["files"][f"{name}.jsonl"] = len(records)
        log.info("%s.jsonl: %d records%s", name, len(records), "" if records else " (not written)")
    (out / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    pairs = files["preference_pairs"]
    if cfg.format != "jsonl":
        tables = {name: exporters.table_rows(records) for name, records in training.items()}
        tables["preference_pairs"] = exporters.table_rows(pairs)
        for name, rows in tables.items():
            if rows:
                written = exporters.write_table(rows, out / name, cfg.format)
                log.info("%s: %d rows (%s)", written.name, len(rows), cfg.format)
    return out


def add_user(
    cfg: DBConfig,
    *,
    username: str,
    admin: bool,
    group: str,
    candidate: bool,
    invite: bool,
    password_stdin: bool,
) -> None:
    password = None
    if not invite:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"password for {username}: ")
            if getpass.getpass("again: ") != password:
                raise UserError("users add: the two passwords differ")
        else:
            raise UserError(
                "users add: no terminal to ask for a password: use --password-stdin or --invite"
            )
    engine = db.make_engine(cfg.db)
    db.check_schema(engine)
    try:
        with db.transaction(db.session_factory(engine)) as s:
            user: User = crud.create_user(
                s,
                username=username,
                password=password,
                is_admin=admin,
                group=group,
                status="candidate" if candidate else "active",
            )
            token = user.invite_token
    except crud.Invalid as e:
        raise UserError("users add: " + str(e)) from None
    finally:
        engine.dispose()
    role = "admin" if admin else f"{group} labeler"
    if token:
        print(f"invite link for {username} ({role}): {cfg.base_url.rstrip('/')}/invite/{token}")
    else:
        log.info("added %s (%s)", username, role)
