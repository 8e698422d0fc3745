"""Database access: plain functions taking a Session and keyword arguments. No HTTP here.

Each function works inside the caller's transaction (`db.transaction`), so a submission, its
assignment's status and any prompt it creates are committed together or not at all."""

from __future__ import annotations

import hashlib
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from instructrl import records as R
from instructrl.web.models import (
    GROUPS,
    TASK_KINDS,
    TASK_STATES,
    USER_GROUPS,
    USER_STATUSES,
    Assignment,
    Gold,
    Job,
    LoginSession,
    Output,
    Project,
    Prompt,
    Submission,
    Task,
    User,
    now,
)
from instructrl.web.schemas import normalise_text, validate_payload

_hasher = PasswordHasher()
MIN_PASSWORD = 8
SCREENING_PASS = 0.75  # the paper kept labelers with about 75 % agreement on screening


class Conflict(Exception):
    """The request cannot be applied to the current state (HTTP 409)."""


class NotFound(Exception):
    """No such row (maps to 404)."""


class Forbidden(Exception):
    """The user may not touch this object (HTTP 403)."""


class Invalid(Exception):
    """Input errors keyed by form field (HTTP 422; pages show each beside its field)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


# ----------------------------------------------------------------------------- users
def create_user(
    s: Session,
    *,
    username: str,
    password: str | None = None,
    is_admin: bool = False,
    group: str = "training",
    status: str = "active",
) -> User:
    """A user with a password, or (password None) an invite whose token sets the password."""
    errors = {}
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        errors["username"] = "1-64 letters, digits, '-', '_' or '.'"
    elif s.scalar(select(User).where(User.username == username)) is not None:
        errors["username"] = f"{username!r} is taken"
    if password is not None and len(password) < MIN_PASSWORD:
        errors["password"] = f"at least {MIN_PASSWORD} characters"
    errors.update(_user_field_errors(group=group, status=status))
    if errors:
        raise Invalid(errors)
    user = User(
        username=username,
        password_hash=_hasher.hash(password) if password is not None else None,
        is_admin=is_admin,
        group=group,
        status=status,
        invite_token=None if password is not None else secrets.token_urlsafe(24),
    )
    s.add(user)
    s.flush()
    return user


def authenticate(s: Session, *, username: str, password: str) -> User | None:
    """The user whose password this is; None for a wrong pair. A deactivated user with the
    right password raises Forbidden (the admin's decision, said as such)."""
    user = s.scalar(select(User).where(User.username == username))
    if user is None or user.password_hash is None:
        _hasher.hash(password)  # same work either way: no timing hint that the name exists
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if user.deactivated_at is not None:
        raise Forbidden("this account is deactivated: ask an admin")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def accept_invite(s: Session, *, token: str, password: str) -> User:
    user = invited_user(s, token)
    if user is None:
        raise Forbidden("this invite link is not valid (used already, or mistyped)")
    if len(password) < MIN_PASSWORD:
        raise Invalid({"password": f"at least {MIN_PASSWORD} characters"})
    user.password_hash = _hasher.hash(password)
    user.invite_token = None
    end_sessions(s, user_id=user.id)  # a new password ends every earlier session
    return user


def invited_user(s: Session, token: str) -> User | None:
    """The user an unused invite link is for (None for a used or mistyped one)."""
    return s.scalar(select(User).where(User.invite_token == token)) if token else None


# ----------------------------------------------------------------------------- login sessions
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(s: Session, *, user_id: int, client: str = "") -> str:
    """A new login session; returns the token the cookie holds (the table keeps its hash)."""
    token = secrets.token_urlsafe(32)
    s.add(LoginSession(token_hash=_token_hash(token), user_id=user_id, client=client[:64]))
    s.flush()
    return token


def session_user(s: Session, token: str | None) -> User | None:
    """The user of a live session: not revoked, the user neither deactivated nor waiting for
    a password (reset). None otherwise."""
    if not token:
        return None
    row = s.scalar(
        select(LoginSession).where(
            LoginSession.token_hash == _token_hash(token), LoginSession.revoked_at.is_(None)
        )
    )
    user = s.get(User, row.user_id) if row is not None else None
    if user is None or user.password_hash is None or user.deactivated_at is not None:
        return None
    return user


def end_session(s: Session, token: str | None) -> None:
    if token:
        for row in s.scalars(
            select(LoginSession).where(
                LoginSession.token_hash == _token_hash(token), LoginSession.revoked_at.is_(None)
            )
        ):
            row.revoked_at = now()


def end_sessions(s: Session, *, user_id: int) -> int:
    """Revoke every live session of a user; returns how many there were."""
    rows = s.scalars(
        select(LoginSession).where(
            LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None)
        )
    ).all()
    for row in rows:
        row.revoked_at = now()
    return len(rows)


def deactivate_user(s: Session, *, user_id: int, by: int) -> User:
    """No more sign-ins, every session ended at once; the answers stay."""
    user = get_user(s, user_id)
    if user.id == by:
        raise Invalid({"user": "you cannot deactivate yourself"})
    user.deactivated_at = user.deactivated_at or now()
    end_sessions(s, user_id=user.id)
    return user


def reactivate_user(s: Session, *, user_id: int) -> User:
    user = get_user(s, user_id)
    user.deactivated_at = None
    return user


def reset_user(s: Session, *, user_id: int) -> str:
    """Forget the password, end every session and return a new invite token."""
    user = get_user(s, user_id)
    user.password_hash = None
    user.invite_token = secrets.token_urlsafe(24)
    end_sessions(s, user_id=user.id)
    return user.invite_token


def get_user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise Invalid({"user": f"no user {user_id}"})
    return user


def set_user(
    s: Session, *, user_id: int, group: str | None = None, status: str | None = None
) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise Invalid({"user": f"no user {user_id}"})
    errors = _user_field_errors(group=group, status=status)
    if errors:
        raise Invalid(errors)
    user.group = group or user.group
    user.status = status or user.status
    return user


def _user_field_errors(*, group: str | None, status: str | None) -> dict[str, str]:
    errors = {}
    if group is not None and group not in USER_GROUPS:
        errors["group"] = f"one of {', '.join(USER_GROUPS)}"
    if status is not None and status not in USER_STATUSES:
        errors["status"] = f"one of {', '.join(USER_STATUSES)}"
    return errors


# ----------------------------------------------------------------------------- projects, data
def create_project(s: Session, *, name: str, instructions: str = "") -> Project:
    name = name.strip()
    if not name or len(name) > 128:
        raise Invalid({"name": "1-128 characters"})
    if s.scalar(select(Project).where(Project.name == name)) is not None:
        raise Invalid({"name": f"a project named {name!r} exists"})
    project = Project(name=name, instructions=instructions)
    s.add(project)
    s.flush()
    return project


def _prompt_row(project_id: int, record: R.Prompt, **fields: Any) -> Prompt:
    """A prompts-table row holding the record verbatim and the text a labeler reads."""
    return Prompt(
        project_id=project_id,
        key=record.id,
        text=R.prompt_as_text(record.prompt),
        record=record.to_dict(),
        **fields,
    )


def import_prompts(s: Session, *, project: Project, prompts: list[R.Prompt]) -> tuple[int, int]:
    """(added, already there): prompts are keyed by their record id within the project."""
    existing = set(s.scalars(select(Prompt.key).where(Prompt.project_id == project.id)))
    added = 0
    for p in prompts:
        if p.id in existing:
            continue
        s.add(_prompt_row(project.id, p))
        existing.add(p.id)
        added += 1
    s.flush()
    return added, len(prompts) - added


def import_samples(s: Session, *, project: Project, samples: list[R.Sample]) -> int:
    """Attach model outputs to the project's prompts (a prompt not there yet is added from the
    sample). Returns the number of outputs added; outputs already there are not repeated."""
    prompts = {p.key: p for p in s.scalars(select(Prompt).where(Prompt.project_id == project.id))}
    added = 0
    for sample in samples:
        prompt = prompts.get(sample.prompt_id)
        if prompt is None:
            prompt = _prompt_row(project.id, R.Prompt(id=sample.prompt_id, prompt=sample.prompt))
            s.add(prompt)
            s.flush()
            prompts[prompt.key] = prompt
        if any(o.response == sample.response and o.model == sample.model for o in prompt.outputs):
            continue
        if len(prompt.outputs) >= R.K_MAX:
            raise Invalid(
                {"file": f"prompt {sample.prompt_id!r}: more than {R.K_MAX} outputs (K = 2..9)"}
            )
        prompt.outputs.append(
            Output(
                position=len(prompt.outputs),
                response=sample.response,
                model=sample.model,
                finish_reason=sample.finish_reason,
            )
        )
        added += 1
    s.flush()
    return added


def create_task(
    s: Session,
    *,
    project: Project,
    kind: str,
    title: str,
    group: str = "training",
    per_item: int = 1,
    count: int = 0,
    instructions: str = "",
    covers: str = "all_now",
    covers_value: str = "",
) -> Task:
    """A task over the project's prompts as `covers` says: all_now (the prompts there now;
    later imports do not join), all_later (every prompt, later imports too), category or
    split (`covers_value`), ids (`covers_value`: prompt ids, by commas or spaces)."""
    errors = {}
    if kind not in TASK_KINDS:
        errors["kind"] = f"one of {', '.join(TASK_KINDS)}"
    if group not in GROUPS:
        errors["group"] = f"one of {', '.join(GROUPS)}"
    if not 1 <= per_item <= 100:
        errors["per_item"] = "1 to 100 labelers per item"
    if kind == "write_prompt" and not 1 <= count <= 100_000:
        errors["count"] = "how many prompts to write: 1 to 100000"
    if not title.strip():
        errors["title"] = "required"
    selection = None
    if kind != "write_prompt" and not errors:
        keys = _covered_keys(s, project, covers, covers_value, errors)
        if keys is not None:
            selection = {"covers": covers, "value": covers_value.strip(), "keys": keys}
    if errors:
        raise Invalid(errors)
    task = Task(
        project_id=project.id,
        kind=kind,
        title=title.strip(),
        group=group,
        per_item=per_item,
        count=count if kind == "write_prompt" else 0,
        instructions=normalise_text(instructions) if instructions.strip() else "",
        selection=selection,
    )
    s.add(task)
    s.flush()
    if kind in ("rate", "rank") and not task_items(s, task=task):
        raise Invalid({"kind": "no prompt of this task has 2 or more outputs to rate or rank"})
    if kind == "demonstration" and not task_items(s, task=task):
        raise Invalid({"covers": "no prompt of this project matches"})
    return task


COVERS = ("all_now", "all_later", "category", "split", "ids")


def _covered_keys(
    s: Session, project: Project, covers: str, value: str, errors: dict[str, str]
) -> list[str] | None:
    """The prompt keys a new task covers (None: all, later imports too)."""
    if covers not in COVERS:
        errors["covers"] = f"one of {', '.join(COVERS)}"
        return None
    if covers == "all_later":
        return None
    prompts = list(s.scalars(select(Prompt).where(Prompt.project_id == project.id)))
    value = value.strip()
    if covers in ("category", "split") and not value:
        errors["covers_value"] = f"name the {covers}"
        return None
    if covers == "category":
        keys = [p.key for p in prompts if (p.record or {}).get("category") == value]
    elif covers == "split":
        keys = [p.key for p in prompts if (p.record or {}).get("split") == value]
    elif covers == "ids":
        wanted = [k for k in value.replace(",", " ").split() if k]
        known = {p.key for p in prompts}
        unknown = [k for k in wanted if k not in known]
        if unknown or not wanted:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            errors["covers_value"] = (
                f"no such prompt ids in this project: {shown}" if unknown else "list prompt ids"
            )
            return None
        keys = list(dict.fromkeys(wanted))
    else:
        keys = [p.key for p in prompts]
    if not keys:
        errors["covers_value" if covers != "all_now" else "covers"] = (
            "no prompt of this project matches"
        )
    return keys


def set_task(
    s: Session, *, task_id: int, instructions: str | None = None, state: str | None = None
) -> Task:
    """Edit a task's instructions, or pause / resume / archive it (paused and archived tasks
    are not served; their answers stay)."""
    task = s.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if state is not None:
        if state not in TASK_STATES:
            raise Invalid({"state": f"one of {', '.join(TASK_STATES)}"})
        task.state = state
    if instructions is not None:
        task.instructions = normalise_text(instructions) if instructions.strip() else ""
    return task


def _prompt_items(task: Task):
    """The SELECT of a prompt-based task's items (prompt ids), oldest first."""
    query = select(Prompt.id).where(Prompt.project_id == task.project_id)
    chosen = task.selection
    if chosen is not None:  # the prompts the admin chose, not later imports
        covered = Prompt.key.in_(chosen["keys"])
        written = Prompt.source == "labeler"  # prompts labelers write later join these two
        if chosen["covers"] == "all_now":
            covered = or_(covered, written)
        elif chosen["covers"] == "category":
            same = Prompt.record["category"].as_string() == chosen["value"]
            covered = or_(covered, written & same)
        query = query.where(covered)
    if task.kind != "demonstration":  # prompts labelers wrote get demonstrations too
        counts = (
            select(Output.prompt_id).group_by(Output.prompt_id).having(func.count(Output.id) >= 2)
        )
        query = query.where(Prompt.id.in_(counts))
    return query.order_by(Prompt.id)


def task_items(s: Session, *, task: Task) -> list[int]:
    """The items of a task: write_prompt slots, or the prompts it covers (with 2+ outputs for
    rate and rank): those chosen at its creation, and prompts labelers write (all_now and
    category tasks); imported prompts join later only tasks made with covers=all_later."""
    if task.kind == "write_prompt":
        return list(range(task.count))
    return list(s.scalars(_prompt_items(task)))


def _open_items(
    s: Session, task: Task, user: User, limit: int, *, skip_locked: bool = False
) -> list[int]:
    """Items of the task that still need a labeler and that this user has not had (in SQL, so
    a project of many prompts costs one indexed query, not a scan in Python). `skip_locked`
    locks the prompt rows returned and skips those other claims hold (PostgreSQL's queue idiom
    FOR NO KEY UPDATE SKIP LOCKED; SQLite, whose writers run one at a time, ignores it)."""
    full = (
        select(Assignment.item)
        .where(Assignment.task_id == task.id, Assignment.slot >= 0)  # skipped ones free a slot
        .group_by(Assignment.item)
        .having(func.count(Assignment.id) >= task.per_item)
    )
    mine = select(Assignment.item).where(
        Assignment.task_id == task.id, Assignment.user_id == user.id
    )
    if task.kind == "write_prompt":
        blocked = set(s.scalars(full.union(mine)))
        return [i for i in range(task.count) if i not in blocked][:limit]
    query = _prompt_items(task).where(Prompt.id.not_in(full), Prompt.id.not_in(mine)).limit(limit)
    if skip_locked:
        # NO KEY UPDATE: other claims skip the row, yet the foreign-key checks of their own
        # inserts (KEY SHARE) do not wait on it
        query = query.with_for_update(skip_locked=True, key_share=True, of=Prompt)
    return list(s.scalars(query))


def _eligible_tasks(s: Session, user: User) -> list[Task]:
    """The active tasks a user may work on (paused and archived ones are not served)."""
    if user.status == "candidate":
        query = select(Task).where(Task.group == "screening")
    else:
        query = select(Task).where(Task.group == user.group)
    return list(s.scalars(query.where(Task.state == "active").order_by(Task.id)))


def open_assignment(s: Session, *, user: User) -> Assignment | None:
    return s.scalar(
        select(Assignment)
        .where(Assignment.user_id == user.id, Assignment.status == "open")
        .order_by(Assignment.id)
    )


def release_idle(s: Session, *, minutes: float) -> int:
    """Give back every open claim idle for `minutes` (0: none): the row goes, so its slot is
    free for the next labeler. Returns how many."""
    if minutes <= 0:
        return 0
    cutoff = now() - timedelta(minutes=minutes)
    idle = s.scalars(
        select(Assignment).where(
            Assignment.status == "open",
            func.coalesce(Assignment.active_at, Assignment.opened_at) < cutoff,
        )
    ).all()
    for assignment in idle:
        s.delete(assignment)
    s.flush()
    return len(idle)


def release(s: Session, *, assignment_id: int) -> Assignment:
    """An admin gives an open claim back to the queue (a done one is refused)."""
    assignment = s.get(Assignment, assignment_id)
    if assignment is None:
        raise NotFound(f"no assignment {assignment_id}")
    if assignment.status != "open":
        raise Conflict(f"assignment {assignment_id} is done: there is nothing to release")
    s.delete(assignment)
    s.flush()
    return assignment


SKIP_REASONS = {
    "cannot_judge": "I cannot judge this (outside what I know)",
    "language": "not in a language I read well",
    "content": "content I do not want to work on",
    "broken": "the item is broken (empty, garbled, outputs missing)",
    "other": "another reason (say which)",
}


def skip(s: Session, *, assignment_id: int, user: User, reason: str, note: str = "") -> None:
    """The labeler passes on an item, with a reason: recorded, never asked of them again, and
    the slot freed for another labeler (slot -id keeps the unique constraints)."""
    assignment = get_assignment(s, assignment_id=assignment_id, user=user)
    if assignment.status != "open":
        raise Conflict(f"assignment {assignment_id} is {assignment.status}: nothing to skip")
    if reason not in SKIP_REASONS:
        raise Invalid({"reason": f"one of {', '.join(SKIP_REASONS)}"})
    note = normalise_text(note)[:500] if note.strip() else ""
    if reason == "other" and not note:
        raise Invalid({"reason": "say which reason"})
    _requeue(assignment, "skipped")
    assignment.skip_reason = reason + (f": {note}" if note else "")
    assignment.done_at = now()


def _requeue(assignment: Assignment, status: str) -> None:
    """Close an assignment without an answer that counts (skipped, rejected) and free its slot
    for another labeler: slot -id keeps (task, item, slot) unique, and the claim queries count
    only slots >= 0. The row stays, so the same labeler is not given the item again."""
    assignment.status, assignment.slot = status, -assignment.id


def position(s: Session, *, assignment: Assignment) -> tuple[int, int]:
    """(n, N): this is the labeler's item n of the N the task holds."""
    done = s.scalar(
        select(func.count(Assignment.id)).where(
            Assignment.task_id == assignment.task_id,
            Assignment.user_id == assignment.user_id,
            Assignment.status != "open",
        )
    )
    return (done or 0) + 1, len(task_items(s, task=assignment.task))


def reassign(s: Session, *, assignment_id: int, username: str) -> Assignment:
    """An admin hands an open claim to another labeler of the task's group (who has not had
    that item): it becomes their open item, its idle clock restarted."""
    assignment = s.get(Assignment, assignment_id)
    if assignment is None:
        raise NotFound(f"no assignment {assignment_id}")
    if assignment.status != "open":
        raise Conflict(f"assignment {assignment_id} is {assignment.status}: nothing to reassign")
    user = s.scalar(select(User).where(User.username == username))
    task = assignment.task
    group_ok = user is not None and (
        user.status == "candidate" if task.group == "screening" else user.group == task.group
    )
    if user is None or user.deactivated_at is not None or user.is_admin or not group_ok:
        raise Invalid({"username": f"no active {task.group} labeler named {username!r}"})
    had = s.scalar(
        select(Assignment.id).where(
            Assignment.task_id == task.id,
            Assignment.item == assignment.item,
            Assignment.user_id == user.id,
        )
    )
    if had is not None:
        raise Invalid({"username": f"{username} has had this item already"})
    if open_assignment(s, user=user) is not None:
        raise Invalid({"username": f"{username} is working on another item: release it first"})
    assignment.user_id, assignment.active_at = user.id, now()
    s.flush()
    return assignment


def touch(assignment: Assignment) -> None:
    """The labeler is on it: its claim's idle clock starts again."""
    assignment.active_at = now()


def open_claims(s: Session, *, project: Project) -> list[Assignment]:
    """Open claims of a project's tasks, the oldest activity first (the admin's release list)."""
    return list(
        s.scalars(
            select(Assignment)
            .join(Task, Assignment.task_id == Task.id)
            .where(Task.project_id == project.id, Assignment.status == "open")
            .order_by(func.coalesce(Assignment.active_at, Assignment.opened_at))
        )
    )


def next_assignment(
    s: Session, *, user: User, claim_minutes: float = 0, task_id: int | None = None
) -> Assignment | None:
    """The user's open assignment, or a new one: the first item (of the user's group's tasks,
    or of task `task_id` when the labeler picked one) that still needs a labeler and that this
    user has not had. Two users racing for the last slot of an item both insert it; the unique
    constraint keeps one, the other moves on. Claims idle for `claim_minutes` are released
    first (anyone's)."""
    release_idle(s, minutes=claim_minutes)
    current = open_assignment(s, user=user)
    if current is not None:
        return current
    for task in _eligible_tasks(s, user):
        if task_id is not None and task.id != task_id:
            continue
        assignment = _claim(s, task, user)
        if assignment is not None:
            return assignment
    return None


def task_choices(s: Session, *, user: User, cap: int = 1000) -> list[tuple[Task, int]]:
    """The active tasks open to a user with how many items each still has for them (counted up
    to `cap`), for the labeler's task picker; tasks with nothing left are left out."""
    out = []
    for task in _eligible_tasks(s, user):
        n = len(_open_items(s, task, user, limit=cap))
        if n:
            out.append((task, n))
    return out


def _claim(s: Session, task: Task, user: User) -> Assignment | None:
    """Insert an assignment to an open item of the task, the oldest first. First the oldest
    item no concurrent claim holds (one locked row); failing that, labelers racing for one
    slot: the unique constraint on (task, item, slot) refuses all inserts but one; a loser asks
    again for open items and tries them in random order, so a crowd spreads out. Every refusal
    means another labeler's claim committed, so the loop ends."""
    rng, first_round = random.Random(), True
    free = _open_items(s, task, user, limit=1, skip_locked=True)
    while items := free or _open_items(s, task, user, limit=32):
        free = []
        if not first_round:
            rng.shuffle(items)
        first_round = False
        item = items[0]
        taken = s.scalar(
            select(func.count(Assignment.id)).where(
                Assignment.task_id == task.id, Assignment.item == item, Assignment.slot >= 0
            )
        )
        for slot in range(taken, task.per_item):
            assignment = Assignment(
                task_id=task.id,
                item=item,
                slot=slot,
                user_id=user.id,
                prompt_id=None if task.kind == "write_prompt" else item,
            )
            try:
                with s.begin_nested():
                    s.add(assignment)
                    s.flush()
            except IntegrityError:
                continue
            return assignment
    return None


def get_assignment(s: Session, *, assignment_id: int, user: User) -> Assignment:
    assignment = s.get(Assignment, assignment_id)
    if assignment is None or assignment.user_id != user.id:
        # the same answer for "not yours" and "not there": ids of others' work stay private
        raise Forbidden(
            f"assignment {assignment_id} is not yours (or it went back to the queue after a "
            f"long pause: take the next item)"
        )
    return assignment


def outputs_of(assignment: Assignment) -> list[Output]:
    return list(assignment.prompt.outputs) if assignment.prompt is not None else []


def submit(
    s: Session, *, assignment_id: int, user: User, client_id: str, payload: Any
) -> tuple[Submission, bool]:
    """Store one answer: (submission, created). A retry with the same client_id returns the
    first copy; a second, different answer to a done assignment is a Conflict."""
    previous = s.scalar(select(Submission).where(Submission.client_id == client_id))
    if previous is not None:
        if previous.user_id != user.id or previous.assignment_id != assignment_id:
            raise Conflict("this client id belongs to another submission")
        return previous, False
    assignment = get_assignment(s, assignment_id=assignment_id, user=user)
    if assignment.status != "open":  # done, skipped, or rejected and requeued
        raise Conflict(f"assignment {assignment_id} is {assignment.status} already")
    task = assignment.task
    clean, errors = validate_payload(task.kind, payload, k=len(outputs_of(assignment)))
    if errors:
        raise Invalid(errors)
    finished = now()
    submission = Submission(
        assignment_id=assignment.id,
        user_id=user.id,
        client_id=client_id,
        payload=clean,
        seconds=(finished - aware(assignment.opened_at)).total_seconds(),
        created_at=finished,
    )
    assignment.status = "done"
    assignment.done_at = finished
    s.add(submission)
    if task.kind == "write_prompt":
        key = f"{task.project.name}-written-{task.id}-{assignment.item}-{user.username}"
        record = R.Prompt(id=key, prompt=clean["prompt"], category=clean["category"])
        s.add(_prompt_row(task.project_id, record, source="labeler", author_id=user.id))
    s.flush()
    return submission, True


def submit_once(
    factory, *, assignment_id: int, user: User, client_id: str, payload: Any
) -> tuple[int, bool]:
    """`submit` in a transaction of its own: (submission id, created). When a concurrent twin
    (the same client id, or the same assignment) commits first, the unique constraints refuse
    this copy and the second try answers from the stored one."""
    from instructrl.web.db import transaction

    for attempt in range(2):
        try:
            with transaction(factory) as s:
                sub, created = submit(
                    s, assignment_id=assignment_id, user=user, client_id=client_id, payload=payload
                )
                return sub.id, created
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def get_gold(s: Session, *, task_id: int, prompt_id: int) -> Gold | None:
    return s.scalar(select(Gold).where(Gold.task_id == task_id, Gold.prompt_id == prompt_id))


def set_gold(s: Session, *, task: Task, prompt: Prompt, payload: Any) -> Gold:
    if task.group != "screening":
        raise Invalid({"task": "gold answers belong to screening tasks"})
    clean, errors = validate_payload(task.kind, payload, k=len(prompt.outputs))
    if errors:
        raise Invalid(errors)
    gold = get_gold(s, task_id=task.id, prompt_id=prompt.id)
    if gold is None:
        gold = Gold(task_id=task.id, prompt_id=prompt.id, payload=clean)
        s.add(gold)
    else:
        gold.payload = clean
    s.flush()
    return gold


def create_job(
    s: Session, *, project: Project, kind: str, params: dict[str, Any], total: int
) -> Job:
    job = Job(project_id=project.id, kind=kind, params=params, total=total)
    s.add(job)
    s.flush()
    return job


def fail_interrupted_jobs(s: Session) -> int:
    """Jobs left queued or running by a server that stopped: their subprocess is gone."""
    stale = list(s.scalars(select(Job).where(Job.status.in_(("queued", "running")))))
    for job in stale:
        job.status, job.finished_at = "failed", now()
        job.message = "interrupted: the server stopped while this job ran; start it again"
    return len(stale)


# ----------------------------------------------------------------------------- admin reads
def get_project(s: Session, project_id: int) -> Project:
    project = s.get(Project, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    return project


def projects_with_prompt_counts(s: Session) -> list[tuple[Project, int]]:
    return [
        (project, n)
        for project, n in s.execute(
            select(Project, func.count(Prompt.id))
            .outerjoin(Prompt, Prompt.project_id == Project.id)
            .group_by(Project.id)
            .order_by(Project.id)
        ).all()
    ]


def project_tasks(s: Session, *, project: Project) -> list[Task]:
    return list(s.scalars(select(Task).where(Task.project_id == project.id).order_by(Task.id)))


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.id)))


def prompt_counts(s: Session, *, project: Project) -> tuple[int, int]:
    """(prompts, prompts with model outputs) of a project."""
    prompts = s.scalar(select(func.count(Prompt.id)).where(Prompt.project_id == project.id))
    with_outputs = s.scalar(
        select(func.count(func.distinct(Output.prompt_id)))
        .join(Prompt, Output.prompt_id == Prompt.id)
        .where(Prompt.project_id == project.id)
    )
    return prompts or 0, with_outputs or 0


def prompts_without_outputs(s: Session, *, project_id: int) -> list[dict[str, Any]]:
    """Prompt records of a project that no model has answered yet (for a generation job)."""
    rows = s.scalars(
        select(Prompt).where(
            Prompt.project_id == project_id, ~Prompt.id.in_(select(Output.prompt_id))
        )
    )
    return [p.record for p in rows]


def screening_items(s: Session, *, project: Project) -> list[tuple[Task, list[Prompt]]]:
    """Each screening task of a project with its prompts (gold answers are set per prompt)."""
    tasks = s.scalars(select(Task).where(Task.project_id == project.id, Task.group == "screening"))
    return [
        (t, list(s.scalars(select(Prompt).where(Prompt.id.in_(task_items(s, task=t))))))
        for t in tasks
    ]


def project_jobs(s: Session, *, project: Project) -> list[Job]:
    return list(s.scalars(select(Job).where(Job.project_id == project.id).order_by(Job.id.desc())))


def get_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def gold_target(s: Session, *, task_id: int, prompt_id: int) -> tuple[Task, Prompt]:
    """The screening task and prompt a gold answer belongs to."""
    task, prompt = s.get(Task, task_id), s.get(Prompt, prompt_id)
    if task is None or prompt is None or prompt.project_id != task.project_id:
        raise NotFound("no such screening item")
    if task.group != "screening":
        raise Invalid({"task": "gold answers belong to screening tasks"})
    return task, prompt


# ----------------------------------------------------------------------------- reading out
def done_rows(
    s: Session,
    project: Project,
    *,
    groups: tuple[str, ...] = USER_GROUPS,
    rejected: bool = False,
):
    """(submission, assignment, task, user) rows of the project's tasks of these labeler
    groups, oldest first (screening answers only when asked for; rejected answers only with
    `rejected=True`: exports and figures leave them out)."""
    query = (
        select(Submission, Assignment, Task, User)
        .join(Assignment, Submission.assignment_id == Assignment.id)
        .join(Task, Assignment.task_id == Task.id)
        .join(User, Submission.user_id == User.id)
        .where(Task.project_id == project.id, Task.group.in_(groups))
        .order_by(Submission.id)
    )
    if not rejected:
        query = query.where(Submission.rejected_at.is_(None))
    return s.execute(query).all()


def reject(s: Session, *, submission_id: int, reason: str) -> Submission:
    """An admin rejects an answer: kept and marked (reason, time), left out of exports and
    figures, and its item requeued (the slot freed; the same labeler is not asked again)."""
    sub = s.get(Submission, submission_id)
    if sub is None:
        raise NotFound(f"no answer {submission_id}")
    if sub.rejected_at is not None:
        raise Conflict(f"answer {submission_id} is rejected already")
    reason = normalise_text(reason)[:500] if reason.strip() else ""
    if not reason:
        raise Invalid({"reason": "say why (the labeler's lead will read it)"})
    sub.rejected_at, sub.reject_reason = now(), reason
    _requeue(sub.assignment, "rejected")
    return sub
