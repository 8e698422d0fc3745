"""Records that cross stage boundaries, one JSON object a line (design.md, "Records").

Each kind is a dataclass with `from_dict` (validating, raising `FieldError`) and `to_dict`
(known fields first, then every unknown key exactly as read, so a round trip keeps them).
`read_records` reports every bad line as `path:line: field: expected ..., got ...`.

Adapters: pairwise `{"prompt", "chosen", "rejected"}` rows read as K = 2 comparisons with
ranking [0, 1]; `{"prompt", "completion"}` rows read as demonstrations.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from instructrl.errors import RecordError

KINDS = ("prompt", "demonstration", "comparison", "rating", "sample")
SPLITS = ("train", "val", "test")
ROLES = ("system", "user", "assistant")
FINISH_REASONS = ("eos", "length", "stop")
K_MIN, K_MAX = 2, 9
LIKERT_MIN, LIKERT_MAX = 1, 7
# The paper's metadata flags (section 3.6, appendix B), one boolean each on a rating.
FLAGS = (
    "fails_to_follow_instruction",
    "inappropriate_for_customer_assistant",
    "hallucination",
    "satisfies_constraint",
    "sexual_content",
    "violent_content",
    "encourages_violence",
    "denigrates_protected_class",
    "harmful_advice",
    "expresses_opinion",
    "expresses_moral_judgment",
)
# The four of them that the paper's Figure 4 plots (the evaluation and its report).
FIGURE4_FLAGS = (
    "fails_to_follow_instruction",
    "hallucination",
    "satisfies_constraint",
    "inappropriate_for_customer_assistant",
)

Messages = list[dict[str, str]]
PromptText = Union[str, Messages]  # noqa: UP007 (readable alias)


class FieldError(Exception):
    """One field of one record is wrong; `read_records` adds `path:line`."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _required(d: dict, key: str) -> Any:
    if key not in d:
        raise FieldError(key, "missing required field")
    return d[key]


def _str(d: dict, key: str, *, required: bool, nonempty: bool = False) -> str | None:
    if key not in d or (d[key] is None and not required):
        if required:
            raise FieldError(key, "missing required field")
        return None
    value = d[key]
    if not isinstance(value, str):
        raise FieldError(key, f"expected a string, got {_show(value)}")
    if nonempty and not value.strip():
        raise FieldError(key, "expected a non-empty string, got an empty one")
    return value


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(key, f"expected an integer from {lo} to {hi}, got {_show(value)}")
    if not lo <= value <= hi:
        raise FieldError(key, f"expected an integer from {lo} to {hi}, got {value}")
    return value


def _choice(d: dict, key: str, choices: tuple[str, ...], *, required: bool) -> str | None:
    value = _str(d, key, required=required)
    if value is not None and value not in choices:
        raise FieldError(key, f"expected one of {', '.join(choices)}, got {_show(value)}")
    return value


def _prompt_text(d: dict, key: str = "prompt") -> PromptText:
    """A prompt is plain text or a list of chat messages with roles system/user/assistant."""
    value = _required(d, key)
    if isinstance(value, str):
        if not value.strip():
            raise FieldError(key, "expected a non-empty string, got an empty one")
        return value
    if not isinstance(value, list) or not value:
        raise FieldError(key, f"expected a string or a list of chat messages, got {_show(value)}")
    for i, message in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(message, dict):
            raise FieldError(where, f"expected a message object, got {_show(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise FieldError(
                f"{where}.role", f"expected one of {', '.join(ROLES)}, got {_show(role)}"
            )
        if not isinstance(message.get("content"), str):
            raise FieldError(
                f"{where}.content", f"expected a string, got {_show(message.get('content'))}"
            )
    return value


def _extra(d: dict, known: Iterable[str]) -> dict[str, Any]:
    known = set(known)
    return {k: v for k, v in d.items() if k not in known}


def _dump(known: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in known.items() if v is not None}
    out.update(extra)
    return out


def prompt_as_text(prompt: PromptText) -> str:
    """The user-visible text of a prompt (the last user message of a chat)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else prompt[-1]["content"]


@dataclass
class Prompt:
    kind: ClassVar[str] = "prompt"
    id: str
    prompt: PromptText
    category: str | None = None
    constraints: list[dict[str, Any]] | None = None
    reference: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prompt:
        constraints = d.get("constraints")
        if constraints is not None:
            if not isinstance(constraints, list):
                raise FieldError(
                    "constraints", f"expected a list of objects, got {_show(constraints)}"
                )
            for i, c in enumerate(constraints):
                if not isinstance(c, dict) or not isinstance(c.get("kind"), str):
                    raise FieldError(
                        f"constraints[{i}]",
                        f'expected an object with a "kind" string, got {_show(c)}',
                    )
        return cls(
            id=_str(d, "id", required=True, nonempty=True),
            prompt=_prompt_text(d),
            category=_str(d, "category", required=False),
            constraints=constraints,
            reference=_str(d, "reference", required=False),
            split=_choice(d, "split", SPLITS, required=False),
            extra=_extra(d, ("id", "prompt", "category", "constraints", "reference", "split")),
        )

    def to_dict(self) -> dict[str, Any]:
        return _dump(
            {
                "id": self.id,
                "prompt": self.prompt,
                "category": self.category,
                "constraints": self.constraints,
                "reference": self.reference,
                "split": self.split,
            },
            self.extra,
        )


@dataclass
class Demonstration:
    kind: ClassVar[str] = "demonstration"
    prompt: PromptText
    response: str
    prompt_id: str | None = None
    labeler: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Demonstration:
        if "response" not in d and "completion" in d:  # prompt/completion adapter
            d = {**{k: v for k, v in d.items() if k != "completion"}, "response": d["completion"]}
        return cls(
            prompt=_prompt_text(d),
            response=_str(d, "response", required=True, nonempty=True),
            prompt_id=_str(d, "prompt_id", required=False),
            labeler=_str(d, "labeler", required=False),
            extra=_extra(d, ("prompt", "response", "prompt_id", "labeler")),
        )

    def to_dict(self) -> dict[str, Any]:
        return _dump(
            {
                "prompt_id": self.prompt_id,
                "prompt": self.prompt,
                "response": self.response,
                "labeler": self.labeler,
            },
            self.extra,
        )


def _ranking(value: Any, k: int) -> list[int | list[int]]:
    """`ranking` lists response indices best first; a nested list is a tie group."""
    expected = f"a permutation of 0..{k - 1}"
    if not isinstance(value, list):
        raise FieldError("ranking", f"expected {expected}, got {_show(value)}")
    flat: list[Any] = []
    for item in value:
        if isinstance(item, list):
            if not item:
                raise FieldError(
                    "ranking", f"expected {expected} (tie groups non-empty), got {_show(value)}"
                )
            flat.extend(item)
        else:
            flat.append(item)
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
    if not ints or sorted(flat) != list(range(k)):
        raise FieldError("ranking", f"expected {expected}, got {_show(value)}")
    return value


def ranks_of(ranking: list[int | list[int]], k: int) -> list[int]:
    """Rank of each of k responses (0 = best) from a ranking, best first with nested ties."""
    ranks = [0] * k
    for position, item in enumerate(ranking):
        for index in item if isinstance(item, list) else [item]:
            ranks[index] = position
    return ranks


@dataclass
class Comparison:
    kind: ClassVar[str] = "comparison"
    prompt: PromptText
    responses: list[str]
    ranking: list[int | list[int]]
    prompt_id: str | None = None
    labeler: str | None = None
    # per response, how its sampling ended ("length": cut off, scored without EOS); None: ended
    finish_reasons: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        if "responses" not in d and "chosen" in d and "rejected" in d:  # pairwise adapter
            rest = {k: v for k, v in d.items() if k not in ("chosen", "rejected")}
            d = {**rest, "responses": [d["chosen"], d["rejected"]], "ranking": [0, 1]}
        responses = _required(d, "responses")
        if not isinstance(responses, list):
            raise FieldError(
                "responses",
                f"expected a list of {K_MIN} to {K_MAX} strings, got {_show(responses)}",
            )
        if not K_MIN <= len(responses) <= K_MAX:
            raise FieldError(
                "responses", f"expected {K_MIN} to {K_MAX} responses, got {len(responses)}"
            )
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise FieldError(f"responses[{i}]", f"expected a string, got {_show(r)}")
        reasons = d.get("finish_reasons")
        if reasons is not None:
            if not isinstance(reasons, list) or len(reasons) != len(responses):
                raise FieldError(
                    "finish_reasons",
                    f"expected a list of {len(responses)} finish reasons (one per response), got {_show(reasons)}",
                )
            for i, r in enumerate(reasons):
                if r not in FINISH_REASONS:
                    raise FieldError(
                        f"finish_reasons[{i}]",
                        f"expected one of {', '.join(FINISH_REASONS)}, got {_show(r)}",
                    )
        return cls(
            prompt=_prompt_text(d),
            responses=responses,
            ranking=_ranking(_required(d, "ranking"), len(responses)),
            prompt_id=_str(d, "prompt_id", required=False),
            labeler=_str(d, "labeler", required=False),
            finish_reasons=reasons,
            extra=_extra(
                d, ("prompt", "responses", "ranking", "prompt_id", "labeler", "finish_reasons")
            ),
        )

    @property
    def k(self) -> int:
        return len(self.responses)

    def ranks(self) -> list[int]:
        """Rank of each response (0 = best); tied responses share a rank.  (K,)"""
        return ranks_of(self.ranking, self.k)

    def pairs(self) -> list[tuple[int, int]]:
        """All (winner, loser) index pairs, ties left out, as the paper's RM loss uses them."""
        ranks = self.ranks()
        return [(w, lo) for w in range(self.k) for lo in range(self.k) if ranks[w] < ranks[lo]]

    def to_dict(self) -> dict[str, Any]:
        return _dump(
            {
                "prompt_id": self.prompt_id,
                "prompt": self.prompt,
                "responses": self.responses,
                "ranking": self.ranking,
                "labeler": self.labeler,
                "finish_reasons": self.finish_reasons,
            },
            self.extra,
        )


@dataclass
class Rating:
    kind: ClassVar[str] = "rating"
    prompt_id: str
    response: str
    likert: int
    flags: dict[str, bool] = field(default_factory=dict)
    labeler: str | None = None
    prompt: PromptText | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rating:
        flags = d.get("flags", {})
        if not isinstance(flags, dict):
            raise FieldError("flags", f"expected an object of flag: true/false, got {_show(flags)}")
        for name, value in flags.items():
            if name not in FLAGS:
                raise FieldError(
                    f"flags.{name}", f"expected one of {', '.join(FLAGS)}, got {_show(name)}"
                )
            if not isinstance(value, bool):
                raise FieldError(f"flags.{name}", f"expected true or false, got {_show(value)}")
        return cls(
            prompt_id=_str(d, "prompt_id", required=True, nonempty=True),
            response=_str(d, "response", required=True),
            likert=_int(_required(d, "likert"), "likert", LIKERT_MIN, LIKERT_MAX),
            flags=flags,
            labeler=_str(d, "labeler", required=False),
            prompt=_prompt_text(d) if "prompt" in d else None,
            extra=_extra(d, ("prompt_id", "response", "likert", "flags", "labeler", "prompt")),
        )

    def to_dict(self) -> dict[str, Any]:
        return _dump(
            {
                "prompt_id": self.prompt_id,
                "prompt": self.prompt,
                "response": self.response,
                "likert": self.likert,
                "flags": self.flags,
                "labeler": self.labeler,
            },
            self.extra,
        )


@dataclass
class Sample:
    kind: ClassVar[str] = "sample"
    prompt_id: str
    prompt: PromptText
    response: str
    model: str
    finish_reason: str
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FieldError("seed", f"expected an integer, got {_show(seed)}")
        return cls(
            prompt_id=_str(d, "prompt_id", required=True, nonempty=True),
            prompt=_prompt_text(d),
            response=_str(d, "response", required=True),
            model=_str(d, "model", required=True),
            finish_reason=_choice(d, "finish_reason", FINISH_REASONS, required=True),
            seed=seed,
            extra=_extra(d, ("prompt_id", "prompt", "response", "model", "finish_reason", "seed")),
        )

    def to_dict(self) -> dict[str, Any]:
        return _dump(
            {
                "prompt_id": self.prompt_id,
                "prompt": self.prompt,
                "response": self.response,
                "model": self.model,
                "finish_reason": self.finish_reason,
                "seed": self.seed,
            },
            self.extra,
        )


Record = Union[Prompt, Demonstration, Comparison, Rating, Sample]  # noqa: UP007
RECORD_TYPES: dict[str, type] = {
    c.kind: c for c in (Prompt, Demonstration, Comparison, Rating, Sample)
}


def infer_kind(obj: dict[str, Any]) -> str | None:
    """Guess a record kind from its keys (adapters included); None when nothing fits."""
    keys = set(obj)
    if "responses" in keys or "ranking" in keys or {"chosen", "rejected"} <= keys:
        return "comparison"
    if "likert" in keys:
        return "rating"
    if "finish_reason" in keys or ("model" in keys and "response" in keys):
        return "sample"
    if "response" in keys or "completion" in keys:
        return "demonstration"
    if "id" in keys and "prompt" in keys:
        return "prompt"
    return None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield (line number, object) per non-blank line, or (line number, problem) for a bad line.

    Bytes are decoded line by line so a non-UTF-8 byte is reported at its line; a last line
    without a newline that fails to parse is reported as truncated.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    if ends_with_newline:
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield (
                number,
                f"expected UTF-8 text, got byte 0x{raw[e.start]:02x} at column {e.start + 1}",
            )
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            truncated = number == len(lines) and not ends_with_newline
            hint = " (the last line looks truncated)" if truncated else ""
            yield (
                number,
                f"expected a JSON object, got invalid JSON: {e.msg} at column {e.colno}{hint}",
            )
            continue
        if not isinstance(obj, dict):
            yield number, f"expected a JSON object, got {_show(obj)}"
            continue
        yield number, obj


def read_records(path: str | Path, kind: str | None = None, *, max_errors: int = 20) -> list[Any]:
    """Read and validate a JSONL file of one record kind (inferred from the first object if None).

    Raises RecordError listing up to `max_errors` problems as `path:line: field: message`.
    """
    return [record for _, record in read_numbered(path, kind, max_errors=max_errors)]


def read_numbered(
    path: str | Path, kind: str | None = None, *, max_errors: int = 20
) -> list[tuple[int, Any]]:
    """Like `read_records`, with each record's line number, for errors that span records."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(
            [
                f"{path}: expected a JSONL file, found {'a directory' if path.is_dir() else 'nothing'}"
            ]
        )
    if kind is not None and kind not in RECORD_TYPES:
        raise RecordError([f"{path}: kind: expected one of {', '.join(KINDS)}, got {kind!r}"])
    records: list[tuple[int, Any]] = []
    problems: list[str] = []
    total = 0
    seen_ids: dict[str, int] = {}

    def problem(message: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < max_errors:
            problems.append(message)

    for number, obj in iter_json_lines(path):
        if isinstance(obj, str):
            problem(f"{path}:{number}: {obj}")
            continue
        if kind is None:
            kind = infer_kind(obj)
            if kind is None:
                problem(
                    f"{path}:{number}: cannot tell the record kind from keys {sorted(obj)}; "
                    f"pass --kind ({'|'.join(KINDS)})"
                )
                break
        try:
            record = RECORD_TYPES[kind].from_dict(obj)
        except FieldError as e:
            problem(f"{path}:{number}: {e.field}: {e.message}")
            continue
        if kind == "prompt":
            if record.id in seen_ids:
                problem(
                    f"{path}:{number}: id: duplicate prompt id {record.id!r} (first at line {seen_ids[record.id]})"
                )
                continue
            seen_ids[record.id] = number
        records.append((number, record))
    if problems:
        raise RecordError(problems, total)
    if not records:
        raise RecordError(
            [f"{path}: expected at least one {kind or 'JSONL'} record, found none (empty file)"]
        )
    return records


def record_kind(records: list[Any]) -> str:
    return records[0].kind


def summarize(path: str | Path, records: list[Any]) -> str:
    """One line: kind, count, and the K range for comparisons."""
    kind = record_kind(records)
    line = f"{path}: {len(records)} {kind} record{'s' if len(records) != 1 else ''}"
    if kind == "comparison":
        ks = [r.k for r in records]
        line += f", K {min(ks)}..{max(ks)}" if min(ks) != max(ks) else f", K {ks[0]}"
    return line


def write_records(path: str | Path, records: Iterable[Any]) -> Path:
    """Write records (dataclasses or dicts) as JSONL atomically: temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                obj = record if isinstance(record, dict) else record.to_dict()
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
