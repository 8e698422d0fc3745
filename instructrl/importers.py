"""Records from the formats users already have: Hugging Face `datasets` (a `save_to_disk`
folder, Parquet, JSON / JSONL), Label Studio JSON exports, Argilla 2.x exports.

Each importer turns source rows into our records (records.py: demonstrations, comparisons,
ratings), validated the way every stage reads them. A row that does not become a record is
never dropped silently: `Imported.skipped` says where (path:row N) and why, and the CLI prints
the counts. No torch here (the web app imports this module).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructrl.errors import UserError
from instructrl.records import RECORD_TYPES, FieldError, PromptText

FORMATS = ("datasets", "labelstudio", "argilla")
SHAPES = ("auto", "pairs", "hh", "ultrafeedback", "completion", "messages")
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "assistant": "assistant",
    "system": "system",
}
PROMPT_KEYS = ("prompt", "instruction", "question", "input", "request", "query", "text")
RESPONSE_KEYS = ("response", "completion", "output", "answer", "generation", "text")
ITEM_TEXT_KEYS = ("body", "text", "html", "title", "value")


class Skip(Exception):
    """A source row that does not become a record; the message says why."""


@dataclass
class Imported:
    """The records made from a source and every row left out, with where and why."""

    source: str
    records: list[Any] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "where: why"
    rows: int = 0

    def kinds(self) -> Counter:
        return Counter(r.kind for r in self.records)

    def reasons(self) -> Counter:
        return Counter(s.split(": ", 1)[1] if ": " in s else s for s in self.skipped)

    def add(self, where: str, kind: str, data: dict[str, Any]) -> None:
        """Validate `data` as a record of `kind`; an invalid one is skipped with the field."""
        try:
            self.records.append(RECORD_TYPES[kind].from_dict(data))
        except FieldError as e:
            self.skipped.append(f"{where}: {e.field}: {e.message}")

    def skip(self, where: str, why: str) -> None:
        self.skipped.append(f"{where}: {why}")


def import_records(
    fmt: str,
    source: str | Path,
    *,
    shape: str = "auto",
    columns: dict[str, str] | None = None,
    split: str | None = None,
    rating_key: str = "overall_score",
    buckets: list[str] | None = None,
    options: dict[str, str] | None = None,
    labeler: str | None = None,
) -> Imported:
    """Records from `source` in format `fmt` (one of FORMATS). `columns` maps our names
    (prompt, chosen, rejected, completion, messages, completions, response, rating, labeler,
    id, items, left, right) to the source's; see README, Importing."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"import: {source}: no such file or folder")
    columns = dict(columns or {})
    if fmt == "datasets":
        return _from_datasets(source, shape, columns, split, rating_key, labeler)
    if fmt == "labelstudio":
        return _from_labelstudio(source, columns, buckets)
    if fmt == "argilla":
        return _from_argilla(source, columns, options or {})
    raise UserError(f"import: format {fmt!r}: expected one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------- shared helpers
def _messages(value: Any, where: str) -> list[dict[str, str]]:
    """Chat messages with our roles (human -> user, gpt -> assistant)."""
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise Skip(
                f"{where}[{i}]: expected a message with a string content, got {str(m)[:60]!r}"
            )
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).lower())
        if role is None:
            raise Skip(
                f"{where}[{i}].role: expected user, assistant or system, got {m.get('role')!r}"
            )
        out.append({"role": role, "content": m["content"]})
    return out


def _prompt(value: Any, where: str) -> PromptText:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return _messages(value, where)
    raise Skip(f"{where}: expected text or chat messages, got {str(value)[:60]!r}")


def _response(value: Any, where: str) -> str:
    """A response: text, or the last assistant message of a list of messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        messages = _messages(value, where)
        if messages[-1]["role"] != "assistant":
            raise Skip(f"{where}: the last message is not the assistant's")
        return messages[-1]["content"]
    raise Skip(f"{where}: expected text or chat messages, got {str(value)[:60]!r}")


def hh_turns(text: str) -> list[dict[str, str]]:
    """An Anthropic HH-RLHF conversation ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages."""
    import re

    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise Skip("expected a conversation of '\\n\\nHuman: ' and '\\n\\nAssistant: ' turns")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c} for r, c in zip(parts[1::2], parts[2::2], strict=True)]


def split_last_turn(conversation: Any, where: str) -> tuple[PromptText, str]:
    """(prompt, response) of a whole conversation: everything before the last assistant turn
    is the prompt (chat messages, or the text of a single user turn)."""
    messages = (
        hh_turns(conversation) if isinstance(conversation, str) else _messages(conversation, where)
    )
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise Skip(f"{where}: expected a conversation that ends with an assistant turn")
    prompt = messages[:-1]
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"], messages[-1]["content"]
    return prompt, messages[-1]["content"]


def ranking_from_scores(scores: list[float]) -> list[int | list[int]]:
    """Indices best first, equal scores as one tie group."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and scores[groups[-1][0]] == scores[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    if len(groups) < 2:
        raise Skip("every response is tied: no preference")
    return [g[0] if len(g) == 1 else sorted(g) for g in groups]


def _first_key(d: dict[str, Any], wanted: str | None, defaults: tuple[str, ...], what: str) -> str:
    if wanted:
        if wanted not in d:
            raise Skip(f"no {wanted!r} field for the {what}")
        return wanted
    for key in defaults:
        if isinstance(d.get(key), (str, list)) and d.get(key):
            return key
    raise Skip(
        f"no {what} field (looked for {', '.join(defaults)}; name it with columns.{what}=FIELD)"
    )


# ----------------------------------------------------------------------------- datasets
def _load_dataset_rows(source: Path, split: str | None) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise UserError(
            "import datasets: the `datasets` package is not installed; pip install 'instructrl[datasets]'"
        ) from e
    datasets.disable_progress_bars()
    if source.is_dir():
        try:
            data = datasets.load_from_disk(str(source))
        except FileNotFoundError as e:
            raise UserError(
                f"import datasets: {source}: not a folder written by Dataset.save_to_disk ({e})"
            ) from e
    else:
        builder = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}.get(source.suffix)
        if builder is None:
            raise UserError(
                f"import datasets: {source}: expected a save_to_disk folder, .parquet, .json or .jsonl"
            )
        try:
            data = datasets.load_dataset(builder, data_files=str(source), split="train")
        except Exception as e:  # the library's own message says what is wrong with the file
            raise UserError(f"import datasets: {source}: cannot read it as {builder}: {e}") from e
    if isinstance(data, datasets.DatasetDict):
        names = list(data)
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in data:
            raise UserError(
                f"import datasets: {source}: split={split or '?'}: expected one of {', '.join(names)}"
            )
        data = data[chosen]
    return data


def detect_shape(names: set[str], columns: dict[str, str]) -> str:
    """The preference or demonstration shape a dataset's columns have."""

    def has(name: str) -> bool:
        return columns.get(name, name) in names

    if has("messages"):
        return "messages"
    if has("completions"):
        return "ultrafeedback"
    if has("chosen") and has("rejected"):
        return "pairs" if has("prompt") else "hh"
    if has("prompt") and (has("completion") or has("response")):
        return "completion"
    raise UserError(
        f"import datasets: cannot tell the shape from the columns {sorted(names)}; expected "
        f"prompt/chosen/rejected, chosen/rejected (HH style), prompt/completions (UltraFeedback), "
        f"prompt/completion or messages; map yours with columns.NAME=COLUMN or pass shape="
    )


def _from_datasets(
    source: Path,
    shape: str,
    columns: dict[str, str],
    split: str | None,
    rating_key: str,
    labeler: str | None,
) -> Imported:
    data = _load_dataset_rows(source, split)
    if shape not in SHAPES:
        raise UserError(f"import datasets: shape={shape}: expected one of {', '.join(SHAPES)}")
    if shape == "auto":
        shape = detect_shape(set(data.column_names), columns)
    result = Imported(str(source))
    col = lambda name: columns.get(name, name)  # noqa: E731
    for i, row in enumerate(data, start=1):
        result.rows += 1
        where = f"{source}:row {i}"
        try:
            kind, record = _dataset_row(row, shape, col, rating_key)
        except Skip as e:
            result.skip(where, str(e))
            continue
        given = row.get(col("id")) if col("id") in row else row.get("prompt_id")
        record.setdefault("prompt_id", str(given) if given is not None else f"{source.stem}-{i}")
        who = row.get(col("labeler")) or labeler
        if who is not None:
            record["labeler"] = str(who)
        result.add(where, kind, record)
    return result


def _dataset_row(row: dict[str, Any], shape: str, col: Any, rating_key: str) -> tuple[str, dict]:
    if shape == "messages":
        prompt, response = split_last_turn(row.get(col("messages")), col("messages"))
        return "demonstration", {"prompt": prompt, "response": response}
    if shape == "completion":
        key = col("completion") if col("completion") in row else col("response")
        return "demonstration", {
            "prompt": _prompt(row.get(col("prompt")), col("prompt")),
            "response": _response(row.get(key), key),
        }
    if shape == "hh":
        prompt, chosen = split_last_turn(row.get(col("chosen")), col("chosen"))
        other, rejected = split_last_turn(row.get(col("rejected")), col("rejected"))
        if other != prompt:
            raise Skip("chosen and rejected differ before their last assistant turn")
        return "comparison", _pair(prompt, chosen, rejected)
    if shape == "pairs":
        prompt = _prompt(row.get(col("prompt")), col("prompt"))
        chosen = _response(row.get(col("chosen")), col("chosen"))
        rejected = _response(row.get(col("rejected")), col("rejected"))
        return "comparison", _pair(prompt, chosen, rejected)
    # ultrafeedback: a list of completions, each with its text and a rating
    prompt = _prompt(row.get(col("prompt")) or row.get("instruction"), col("prompt"))
    completions = row.get(col("completions"))
    if not isinstance(completions, list) or len(completions) < 2:
        raise Skip(f"{col('completions')}: expected a list of 2 or more completions")
    if len(completions) > 9:
        raise Skip(f"{col('completions')}: {len(completions)} completions; K is 2..9")
    texts, scores = [], []
    for j, c in enumerate(completions):
        if not isinstance(c, dict):
            raise Skip(f"{col('completions')}[{j}]: expected an object, got {str(c)[:60]!r}")
        text = (
            c.get(col("response")) if col("response") in c else c.get("text", c.get("completion"))
        )
        score = c.get(col("rating")) if col("rating") in c else c.get(rating_key)
        if not isinstance(text, str):
            raise Skip(f"{col('completions')}[{j}]: no response text (columns.response=KEY)")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise Skip(f"{col('completions')}[{j}]: no numeric {rating_key!r} (rating_key=KEY)")
        texts.append(text)
        scores.append(float(score))
    return "comparison", {
        "prompt": prompt,
        "responses": texts,
        "ranking": ranking_from_scores(scores),
    }


def _pair(prompt: PromptText, chosen: str, rejected: str) -> dict[str, Any]:
    if chosen == rejected:
        raise Skip("chosen and rejected are the same text: no preference")
    return {"prompt": prompt, "responses": [chosen, rejected], "ranking": [0, 1]}


# ----------------------------------------------------------------------------- Label Studio
def _read_json(source: Path, what: str) -> Any:
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"import {what}: {source}:{e.lineno}: not valid JSON ({e.msg})") from e


def _from_labelstudio(source: Path, columns: dict[str, str], buckets: list[str] | None) -> Imported:
    tasks = _read_json(source, "labelstudio")
    if not isinstance(tasks, list):
        raise UserError(
            f"import labelstudio: {source}: expected the JSON export (a list of tasks), got {type(tasks).__name__}"
        )
    result = Imported(str(source))
    for t, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            result.rows += 1
            result.skip(f"{source}:task {t}", "no `data` object")
            continue
        task_id = str(data.get(columns.get("id", "prompt_id")) or task.get("id", t))
        annotations = task.get("annotations") or []
        if not annotations:
            result.rows += 1
            result.skip(f"{source}:task {task_id}", "no annotations")
        for a, ann in enumerate(annotations, start=1):
            result.rows += 1
            where = f"{source}:task {task_id} annotation {ann.get('id', a)}"
            if ann.get("was_cancelled"):
                result.skip(where, "cancelled (skipped by the annotator)")
                continue
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("username") or who.get("id")
            base = {"prompt_id": task_id, "labeler": None if who is None else str(who)}
            handled = 0  # results of a kind we import, made into a record or skipped
            for item in ann.get("result") or []:
                try:
                    kind, record = _labelstudio_result(item, data, columns, buckets)
                except Skip as e:
                    result.skip(where, str(e))
                    handled += 1
                    continue
                if kind is not None:
                    result.add(where, kind, {**base, **record})
                    handled += 1
            if not handled:
                result.skip(where, "no ranker, pairwise or rating result")
    return result


def _labelstudio_result(
    item: dict[str, Any], data: dict[str, Any], columns: dict[str, str], buckets: list[str] | None
) -> tuple[str | None, dict[str, Any]]:
    kind, value = item.get("type"), item.get("value") or {}
    if kind not in ("ranker", "pairwise", "rating"):
        return None, {}
    prompt = data[_first_key(data, columns.get("prompt"), PROMPT_KEYS, "prompt")]
    if kind == "rating":
        key = _first_key(data, columns.get("response"), RESPONSE_KEYS, "response")
        return "rating", {"prompt": prompt, "response": data[key], "likert": value.get("rating")}
    if kind == "pairwise":
        names = item.get("to_name") if isinstance(item.get("to_name"), list) else ["left", "right"]
        keys = [
            columns.get(side, name) for side, name in zip(("left", "right"), names, strict=False)
        ]
        if len(keys) != 2 or any(k not in data for k in keys):
            raise Skip(
                f"pairwise: no data fields {keys} for the two texts (columns.left= / columns.right=)"
            )
        selected = value.get("selected")
        if selected not in ("left", "right"):
            raise Skip(f"pairwise: selected: expected left or right, got {selected!r}")
        texts = [data[k] for k in keys]
        order = [0, 1] if selected == "left" else [1, 0]
        return "comparison", {"prompt": prompt, "responses": texts, "ranking": order}
    lists = tuple(k for k, v in data.items() if isinstance(v, list))
    items = data[_first_key(data, columns.get("items"), ("items", *lists), "items")]
    text_of = {}
    for it in items:
        if isinstance(it, dict) and "id" in it:
            body = next((it[k] for k in ITEM_TEXT_KEYS if isinstance(it.get(k), str)), None)
            if body is not None:
                text_of[str(it["id"])] = body
    groups = _ranker_groups(value, buckets)
    ranked = [[i for i in g if i in text_of] for g in groups]
    missing = [i for g in groups for i in g if i not in text_of]
    if missing:
        raise Skip(f"ranker: item ids {missing} are not in the task's list")
    ids = [i for g in ranked for i in g]
    if len(ids) < 2:
        raise Skip("ranker: fewer than 2 items ranked")
    index = {i: n for n, i in enumerate(ids)}
    ranking = [index[g[0]] if len(g) == 1 else [index[i] for i in g] for g in ranked if g]
    if len(ranking) < 2:
        raise Skip("ranker: every item in one bucket: no preference")
    return "comparison", {
        "prompt": prompt,
        "responses": [text_of[i] for i in ids],
        "ranking": ranking,
    }


def _ranker_groups(value: dict[str, Any], buckets: list[str] | None) -> list[list[str]]:
    """Item ids best first, a bucket as one tie group. Shapes: value.ranker = {NAME: [ids]} (one
    key that is not a named bucket: the Ranker's new order), {BUCKET: [ids], ...} (ordered by
    `buckets`, or as exported; "_" holds items left unplaced, which are not ranked), a bare list
    of ids, or the older items + weights (equal weights tie)."""
    ranker = value.get("ranker")
    if isinstance(ranker, list):
        return [[str(i)] for i in ranker]
    if isinstance(ranker, dict):
        placed = {k: v for k, v in ranker.items() if k != "_"}
        if len(placed) == 1 and next(iter(placed)) not in (buckets or []):
            return [[str(i)] for i in next(iter(placed.values()))]  # the tag's name: an order
        if buckets:
            unknown = [k for k in placed if k not in buckets]
            if unknown:
                raise Skip(f"ranker: buckets {unknown} are not in buckets={buckets}")
            return [[str(i) for i in placed[b]] for b in buckets if placed.get(b)]
        return [[str(i) for i in ids] for ids in placed.values() if ids]
    if isinstance(value.get("items"), list) and isinstance(value.get("weights"), list):
        pairs = sorted(zip(value["weights"], value["items"], strict=True), key=lambda p: -p[0])
        groups: list[list[str]] = []
        last = None
        for w, it in pairs:
            if groups and w == last:
                groups[-1].append(str(it))
            else:
                groups.append([str(it)])
            last = w
        return groups
    raise Skip(f"ranker: unrecognised value {str(value)[:80]!r}")


# ----------------------------------------------------------------------------- Argilla
def _argilla_records(source: Path) -> Iterator[tuple[int, dict[str, Any], dict[str, list]]]:
    """(row, fields, responses {question: [(value, user, status)]}) from a flattened
    `records.to_list(flatten=True)` JSON, a nested one, or a `to_disk` folder."""
    path = source / "records.json" if source.is_dir() else source
    if not path.is_file():
        raise UserError(
            f"import argilla: {source}: no records.json in the folder (Dataset.to_disk writes one)"
        )
    rows = _read_json(path, "argilla")
    if not isinstance(rows, list):
        raise UserError(
            f"import argilla: {path}: expected a list of records, got {type(rows).__name__}"
        )
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            yield n, {}, {}
            continue
        if isinstance(row.get("fields"), dict):  # nested: to_list(flatten=False), to_disk
            responses = {
                q: [(r.get("value"), r.get("user_id"), r.get("status", "submitted")) for r in rs]
                for q, rs in (row.get("responses") or {}).items()
            }
            yield n, row["fields"], responses
            continue
        questions = [k[: -len(".responses")] for k in row if k.endswith(".responses")]
        responses = {}
        for q in questions:
            values = row.get(f"{q}.responses") or []
            users = row.get(f"{q}.responses.users") or [None] * len(values)
            status = row.get(f"{q}.responses.status") or ["submitted"] * len(values)
            responses[q] = list(zip(values, users, status, strict=False))
        taken = {"id", "status", "_server_id", "score"}
        fields = {k: v for k, v in row.items() if "." not in k and k not in taken}
        yield n, fields, responses


def _from_argilla(source: Path, columns: dict[str, str], options: dict[str, str]) -> Imported:
    result = Imported(str(source))
    for n, fields, responses in _argilla_records(source):
        where = f"{source}:record {n}"
        if not fields:
            result.rows += 1
            result.skip(where, "expected a record object")
            continue
        if not any(responses.values()):
            result.rows += 1
            result.skip(where, "no responses")
            continue
        try:
            prompt = fields[_first_key(fields, columns.get("prompt"), PROMPT_KEYS, "prompt")]
        except Skip as e:
            result.rows += len([v for rs in responses.values() for v in rs])
            result.skip(where, str(e))
            continue
        for question, answers in responses.items():
            for value, user, status in answers:
                result.rows += 1
                here = f"{where} {question} by {user}"
                if status not in (None, "submitted"):
                    result.skip(here, f"status {status} (only submitted responses are imported)")
                    continue
                base = {"prompt": prompt, "prompt_id": str(fields.get("id", n)), "labeler": user}
                try:
                    kind, record = _argilla_answer(value, fields, columns, options)
                except Skip as e:
                    result.skip(here, str(e))
                    continue
                result.add(here, kind, {**base, **record})
    return result


def _argilla_answer(
    value: Any, fields: dict[str, Any], columns: dict[str, str], options: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        key = _first_key(fields, columns.get("response"), RESPONSE_KEYS, "response")
        return "rating", {"response": fields[key], "likert": value}
    if not isinstance(value, list) or len(value) < 2:
        raise Skip(f"expected a ranking (a list of options) or a rating, got {str(value)[:60]!r}")
    if all(isinstance(v, dict) for v in value):  # the server's form: [{"value", "rank"}]
        scores = [-float(v.get("rank") or 0) for v in value]
        names = [str(v.get("value")) for v in value]
    else:
        scores = [-float(i) for i in range(len(value))]
        names = [str(v) for v in value]
    texts = []
    for name in names:
        key = options.get(name, name)
        if not isinstance(fields.get(key), str):
            raise Skip(f"ranking option {name!r} names no text field (options.{name}=FIELD)")
        texts.append(fields[key])
    return "comparison", {"responses": texts, "ranking": ranking_from_scores(scores)}


def summary_lines(result: Imported, out: str | None = None, limit: int = 10) -> list[str]:
    """What an import made and left out: counts by kind, by reason, and the first places."""
    kinds = ", ".join(f"{n} {k}" for k, n in result.kinds().items()) or "no records"
    lines = [f"{result.source}: {result.rows} rows -> {kinds}" + (f" in {out}" if out else "")]
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)}:")
        lines += [f"  {n} x {why}" for why, n in result.reasons().most_common()]
        lines += [f"  {s}" for s in result.skipped[:limit]]
        if len(result.skipped) > limit:
            lines.append(f"  ... and {len(result.skipped) - limit} more")
    return lines


def run(cfg: Any) -> Path:
    """`instructrl import`: write the records of one kind; list every skipped row beside them."""
    import logging

    from instructrl.records import write_records

    log = logging.getLogger(__name__)
    result = import_records(
        cfg.format,
        cfg.source,
        shape=cfg.shape,
        columns=cfg.columns,
        split=cfg.split,
        rating_key=cfg.rating_key,
        buckets=list(cfg.buckets),
        options=cfg.options,
        labeler=cfg.labeler,
    )
    kinds = result.kinds()
    if not kinds:
        raise UserError("\n".join(["import: no records made", *summary_lines(result)]))
    kind = cfg.kind
    if kind == "auto":
        if len(kinds) > 1:
            found = ", ".join(f"{n} {k}" for k, n in kinds.items())
            raise UserError(f"import: {cfg.source} holds {found} records; pick one with kind=")
        kind = next(iter(kinds))
    out = Path(cfg.out)
    chosen = [r for r in result.records if r.kind == kind]
    others = len(result.records) - len(chosen)
    if others:
        result.skipped.append(f"{cfg.source}: {others} records of other kinds than {kind} (kind=)")
    write_records(out, chosen)
    skipped_file = out.with_name(out.name + ".skipped.txt")
    if result.skipped:
        skipped_file.write_text("\n".join(result.skipped) + "\n", encoding="utf-8")
    else:
        skipped_file.unlink(missing_ok=True)
    for line in summary_lines(result, str(out)):
        log.info("%s", line)
    if result.skipped:
        log.info("every skipped row, with where and why: %s", skipped_file)
    return out
