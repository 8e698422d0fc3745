"""SQLAlchemy tables of the feedback app. The schema is created by the Alembic migrations in
`migrations/` (`instructrl db upgrade`); a test checks the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TASK_KINDS = ("write_prompt", "demonstration", "rate", "rank")
GROUPS = ("training", "heldout", "screening")
USER_GROUPS = ("training", "heldout")
USER_STATUSES = ("active", "candidate")
TASK_STATES = ("active", "paused", "archived")  # a candidate sees only screening tasks


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    group: Mapped[str] = mapped_column(String(16), default="training")
    # "candidate": sees only screening tasks until an admin accepts it
    status: Mapped[str] = mapped_column(String(16), default="active")
    invite_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    # set by an admin: no sign-in, every session ended; cleared by reactivation
    deactivated_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginSession(Base):
    """A signed-in browser: the cookie holds a random token, the table its SHA-256. Signing
    out, a new password, deactivation and a reset revoke rows, which ends those sessions at
    once (a copied cookie stops working)."""

    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    client: Mapped[str] = mapped_column(String(64), default="")  # the address it signed in from
    created_at: Mapped[datetime] = mapped_column(default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    instructions: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=now)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("project_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    key: Mapped[str] = mapped_column(String(255))  # the prompt record's id
    text: Mapped[str] = mapped_column(Text)  # what a labeler reads
    record: Mapped[dict[str, Any]] = mapped_column(JSON)  # the prompt record, verbatim
    source: Mapped[str] = mapped_column(String(16), default="import")  # import | labeler
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=now)
    outputs: Mapped[list[Output]] = relationship(order_by="Output.position")


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("prompt_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(255), default="")
    finish_reason: Mapped[str] = mapped_column(String(16), default="eos")


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # TASK_KINDS
    title: Mapped[str] = mapped_column(String(255))
    group: Mapped[str] = mapped_column(String(16), default="training")  # GROUPS
    per_item: Mapped[int] = mapped_column(Integer, default=1)  # labelers per prompt
    count: Mapped[int] = mapped_column(Integer, default=0)  # write_prompt: prompts wanted
    instructions: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=now)
    # active: served; paused: not served for now; archived: done with, not served
    state: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    # which prompts it covers: {"covers": all_now | category | split | ids, "value": ...,
    # "keys": the imported prompts chosen}; prompts labelers write join all_now tasks (and
    # category tasks of their category). None: every prompt, later imports too.
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    project: Mapped[Project] = relationship()


class Gold(Base):
    """An admin's answer to a screening item; candidates are scored against it."""

    __tablename__ = "gold"
    __table_args__ = (UniqueConstraint("task_id", "prompt_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class Assignment(Base):
    """One labeler's turn on one item of a task. `slot` < task.per_item: the unique constraint
    on (task, item, slot) is what stops two labelers taking the same last slot at once."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "item", "slot"),
        UniqueConstraint("task_id", "item", "user_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    item: Mapped[int] = mapped_column(Integer)  # prompt id, or the write_prompt slot number
    slot: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"))
    # open | done | skipped (a skipped item's slot becomes -id, freeing it for another labeler)
    status: Mapped[str] = mapped_column(String(16), default="open")
    skip_reason: Mapped[str | None] = mapped_column(Text, default=None)
    opened_at: Mapped[datetime] = mapped_column(default=now)
    # the labeler's last sign of life on it (page loaded, answer tried); an open claim idle for
    # `serve claim_minutes=` is released so another labeler can take the item
    active_at: Mapped[datetime | None] = mapped_column(default=now)
    done_at: Mapped[datetime | None] = mapped_column()
    task: Mapped[Task] = relationship()
    prompt: Mapped[Prompt | None] = relationship()
    user: Mapped[User] = relationship()


class Submission(Base):
    """A labeler's answer. `client_id` comes from the form: a retried post finds its first copy."""

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=now)
    # an admin's rejection: the answer is kept and marked, left out of exports and figures,
    # and its item goes back to the queue
    rejected_at: Mapped[datetime | None] = mapped_column(default=None)
    reject_reason: Mapped[str | None] = mapped_column(Text, default=None)
    assignment: Mapped[Assignment] = relationship()


class Job(Base):
    """A background job (generating K outputs per prompt) and its progress."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=now)
    finished_at: Mapped[datetime | None] = mapped_column()
