from __future__ import annotations

import os

import pytest

os.environ.setdefault("INSTRUCTRL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random causal LM directory (2 layers, width 32), shared by the session's tests."""
    from instructrl.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def rm_dir(tiny_model_dir, tmp_path_factory):
    """A reward model of the tiny model with a random scalar head (seed 0), bias 0."""
    import torch

    from instructrl import models

    out = tmp_path_factory.mktemp("rm") / "rm"
    torch.manual_seed(0)
    rm = models.new_reward_model(str(tiny_model_dir))
    models.save_reward_model(rm, models.load_tokenizer(str(tiny_model_dir)), out, bias=0.0)
    return out


def needs(component: str, reason: str) -> None:
    """Skip when a system component is absent on a developer's machine; under CI=true (set by
    CI, which installs it) a missing component fails the run instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{component} is required in CI: {reason}")
    pytest.skip(f"{component} absent: {reason}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL server that
    `.ci/run` starts (INSTRUCTRL_TEST_PG_URL, see .ci/postgres.sh)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback.db'}"
        return
    server = os.environ.get("INSTRUCTRL_TEST_PG_URL")
    if not server:
        needs("PostgreSQL", "set INSTRUCTRL_TEST_PG_URL (bash .ci/postgres.sh start prints it)")
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        needs("PostgreSQL", f"cannot reach {server}: {e.orig}")
    url = sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
