"""What a submission may contain, per task kind, and the JSON API's bodies.

Errors are keyed by the form field they belong to (`likert_2`, `rank_0`, `response`), so the
HTML pages show each beside its field and the JSON API returns the same names."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from instructrl.records import FLAGS, LIKERT_MAX, LIKERT_MIN, ranks_of

MAX_TEXT = 20_000


class SubmissionIn(BaseModel):
    client_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    payload: dict[str, Any]


class AssignmentOut(BaseModel):
    id: int
    task_id: int
    kind: str
    title: str
    instructions: str
    prompt: str | None
    outputs: list[str]


class SubmissionOut(BaseModel):
    id: int
    assignment_id: int
    client_id: str
    created: bool


class GenerateForm(BaseModel):
    """An admin's generation job: K outputs per prompt from a model."""

    model_config = ConfigDict(str_strip_whitespace=True, protected_namespaces=())
    MESSAGES: ClassVar[dict[str, str]] = {
        "model": "'default', an HF model directory, or a cached hub id",
        "k": "a whole number from 4 to 9",
        "max_new_tokens": "a whole number from 1 to 4096",
        "temperature": "a number in (0, 2]",
    }

    model: str = Field(min_length=1)
    k: int = Field(ge=4, le=9)
    max_new_tokens: int = Field(ge=1, le=4096)
    temperature: float = Field(1.0, gt=0, le=2)


class TaskForm(BaseModel):
    """An admin's new task; `count` (prompts to write) only for write_prompt tasks."""

    MESSAGES: ClassVar[dict[str, str]] = {
        "per_item": "a whole number from 1 to 100",
        "count": "a whole number from 1 to 100000",
    }

    kind: str = ""
    title: str = ""
    group: str = "training"
    instructions: str = ""
    per_item: int = Field(ge=1, le=100)
    count: int = Field(0, ge=0, le=100_000, validate_default=True)
    covers: str = "all_now"  # crud.COVERS: which prompts the task covers
    covers_value: str = ""

    @field_validator("count")
    @classmethod
    def _count_for_prompts(cls, count: int, info: ValidationInfo) -> int:
        if info.data.get("kind") == "write_prompt" and count < 1:
            raise ValueError("write_prompt tasks need a count")
        return count if info.data.get("kind") == "write_prompt" else 0


def parse_form(
    cls: type[GenerateForm] | type[TaskForm], form: dict[str, Any]
) -> tuple[Any, dict[str, str]]:
    """(the form as `cls`, {}) or (None, {field: message}) with each model's own messages."""
    fields = {k: v for k, v in form.items() if k in cls.model_fields and v not in ("", None)}
    try:
        return cls(**fields), {}
    except ValidationError as e:
        errors = {}
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else "form"
            errors.setdefault(field, cls.MESSAGES.get(field, err["msg"]))
        return None, errors


def normalise_text(value: str) -> str:
    """Typed text as stored: line endings as "\n" (browsers send "\r\n"), trailing whitespace
    at the very end removed; everything else (inner spaces, indentation) kept."""
    return value.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def _text(payload: dict[str, Any], key: str, errors: dict[str, str]) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        errors[key] = "required: write some text"
        return ""
    value = normalise_text(value)
    if len(value) > MAX_TEXT:
        errors[key] = f"at most {MAX_TEXT} characters, got {len(value)}"
    return value


def _ratings(payload: dict[str, Any], k: int, errors: dict[str, str]) -> list[dict[str, Any]]:
    ratings = payload.get("ratings")
    if not isinstance(ratings, list) or len(ratings) != k:
        errors["ratings"] = f"expected a rating for each of the {k} outputs"
        return []
    out = []
    for i, r in enumerate(ratings):
        r = r if isinstance(r, dict) else {}
        likert = r.get("likert")
        if isinstance(likert, bool) or not isinstance(likert, int):
            errors[f"likert_{i}"] = f"choose an overall score from {LIKERT_MIN} to {LIKERT_MAX}"
        elif not LIKERT_MIN <= likert <= LIKERT_MAX:
            errors[f"likert_{i}"] = f"expected {LIKERT_MIN} to {LIKERT_MAX}, got {likert}"
        flags = r.get("flags", {})
        if not isinstance(flags, dict) or any(
            f not in FLAGS or not isinstance(v, bool) for f, v in flags.items()
        ):
            errors[f"flags_{i}"] = f"expected true/false for flags among {', '.join(FLAGS)}"
            flags = {}
        out.append({"likert": likert, "flags": {f: bool(flags.get(f, False)) for f in FLAGS}})
    return out


def _ranking(payload: dict[str, Any], k: int, errors: dict[str, str]) -> list[int | list[int]]:
    ranking = payload.get("ranking")
    flat: list[Any] = []
    for item in ranking if isinstance(ranking, list) else []:
        flat.extend(item if isinstance(item, list) and item else [item])
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
    if not isinstance(ranking, list) or not ints or sorted(flat) != list(range(k)):
        errors["ranking"] = f"rank every one of the {k} outputs (ties allowed)"
        return []
    if len(ranking) < 2:
        errors["ranking"] = "every output is tied: that says no preference; rank at least two apart"
        return []
    return ranking


def validate_payload(
    kind: str, payload: Any, *, k: int = 0
) -> tuple[dict[str, Any], dict[str, str]]:
    """(clean payload, errors by field). `k` is the number of outputs for rate and rank."""
    errors: dict[str, str] = {}
    payload = payload if isinstance(payload, dict) else {}
    if kind == "write_prompt":
        clean: dict[str, Any] = {"prompt": _text(payload, "prompt", errors)}
        category = payload.get("category") or None
        if category is not None and (not isinstance(category, str) or len(category) > 64):
            errors["category"] = "expected a short category name"
        clean["category"] = category
    elif kind == "demonstration":
        clean = {"response": _text(payload, "response", errors)}
    elif kind == "rate":
        clean = {"ratings": _ratings(payload, k, errors)}
    elif kind == "rank":
        clean = {"ratings": _ratings(payload, k, errors), "ranking": _ranking(payload, k, errors)}
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    return clean, errors


def payload_from_form(kind: str, form: dict[str, str], *, k: int = 0) -> dict[str, Any]:
    """Turn a posted HTML form into the JSON payload (validation happens after, on both paths).

    Ranks come as `rank_i` = 1..K per output (equal numbers are ties): the drag-and-drop board
    and the keyboard shortcuts only set these fields."""
    if kind == "write_prompt":
        return {"prompt": form.get("prompt", ""), "category": form.get("category", "")}
    if kind == "demonstration":
        return {"response": form.get("response", "")}
    ratings = []
    for i in range(k):
        likert: Any = form.get(f"likert_{i}", "")
        likert = int(likert) if likert.strip().isdigit() else None
        flags = {f: form.get(f"flag_{i}_{f}") in ("on", "true", "1") for f in FLAGS}
        ratings.append({"likert": likert, "flags": flags})
    payload: dict[str, Any] = {"ratings": ratings}
    if kind == "rank":
        ranks: dict[int, int] = {}
        for i in range(k):
            value = form.get(f"rank_{i}", "").strip()
            if value.isdigit():
                ranks[i] = int(value)
        if len(ranks) == k:
            payload["ranking"] = ranking_from_ranks([ranks[i] for i in range(k)])
        else:
            payload["ranking"] = None
    return payload


def ranking_from_ranks(ranks: list[int]) -> list[int | list[int]]:
    """[2, 1, 2, 3] -> [1, [0, 2], 3]: indices best first, equal ranks as a tie group."""
    out: list[int | list[int]] = []
    for value in sorted(set(ranks)):
        group = [i for i, r in enumerate(ranks) if r == value]
        out.append(group[0] if len(group) == 1 else group)
    return out


def ranks_from_ranking(ranking: list[int | list[int]], k: int) -> list[int]:
    """Inverse of `ranking_from_ranks` with ranks numbered from 1."""
    return [r + 1 for r in ranks_of(ranking, k)]
