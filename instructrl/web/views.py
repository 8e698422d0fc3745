"""View helpers shared by the routers: rendering, transactions, flash messages, uploads and
form fields, and the task page's context (also used for gold answers)."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from instructrl import records as R
from instructrl.errors import UserError
from instructrl.records import FLAGS, LIKERT_MAX, LIKERT_MIN
from instructrl.web import crud, db
from instructrl.web.models import Prompt, Task
from instructrl.web.schemas import ranks_from_ranking


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(
        request, name, context, status_code=status_code
    )


def transaction(request: Request):
    return db.transaction(request.app.state.sessions)


def flash(request: Request, message: str) -> None:
    request.session["flash"] = message


def pop_flash(request: Request) -> str | None:
    return request.session.pop("flash", None)


UPLOAD_FORMATS = {
    "jsonl": "instructrl records (JSONL)",
    "datasets": "Hugging Face datasets file (Parquet, JSON, JSONL)",
    "labelstudio": "Label Studio JSON export",
    "argilla": "Argilla 2.x JSON export",
}


def read_upload(form: dict[str, Any], field: str, kind: str) -> tuple[list[Any], list[str]]:
    """(records, skipped) from an uploaded file: our JSONL records of `kind` (errors naming the
    file, not the temp path, by line), or, with the form's `format` field, a foreign export
    read by `importers`, whose records give the prompts (kind "prompt") or the model outputs
    (kind "sample": every response of a comparison, every demonstration) to label here;
    `skipped` lists the source rows left out, with where and why."""
    from instructrl import importers

    upload = form.get(field)
    if upload is None or not hasattr(upload, "file") or not upload.filename:
        raise crud.Invalid({field: "choose a file"})
    fmt = str(form.get("format") or "jsonl")
    if fmt not in UPLOAD_FORMATS:
        raise crud.Invalid({field: f"format: expected one of {', '.join(UPLOAD_FORMATS)}"})
    name = Path(upload.filename).name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(upload.file.read())
        try:
            if fmt == "jsonl":
                return R.read_records(path, kind), []
            got = importers.import_records(fmt, path)
        except UserError as e:
            raise crud.Invalid({field: str(e).replace(str(path), name)}) from None
    skipped = [line.replace(str(path), name) for line in got.skipped]
    records = items_to_label(got.records, kind)
    if not records:
        reasons = "; ".join(skipped[:3]) or "it holds no prompts with responses"
        raise crud.Invalid({field: f"{name}: nothing to import ({reasons})"})
    return records, skipped


def items_to_label(records: list[Any], kind: str) -> list[Any]:
    """Prompts (one per prompt id) or model outputs (sample records: each distinct response of
    a prompt once) from imported records."""
    out: list[Any] = []
    seen: set[tuple[str, str | None]] = set()
    for i, r in enumerate(records):
        if r.prompt is None:
            continue
        prompt_id = r.prompt_id or f"imported-{i}"
        texts = [None] if kind == "prompt" else getattr(r, "responses", None) or [r.response]
        for text in texts:
            if (prompt_id, text) in seen:
                continue
            seen.add((prompt_id, text))
            if kind == "prompt":
                out.append(R.Prompt(id=prompt_id, prompt=r.prompt))
            else:
                out.append(
                    R.Sample(
                        prompt_id=prompt_id,
                        prompt=r.prompt,
                        response=text,
                        model="imported",
                        finish_reason="eos",
                    )
                )
    return out


def int_field(form: dict[str, Any], key: str, lo: int, hi: int, errors: dict[str, str]) -> int:
    """A whole number in [lo, hi] from a form; an error under `key` otherwise."""
    raw = str(form.get(key, "")).strip()
    if not raw.lstrip("-").isdigit() or not lo <= int(raw) <= hi:
        errors[key] = f"a whole number from {lo} to {hi}"
        return lo
    return int(raw)


FLAG_LABELS = {
    "fails_to_follow_instruction": "Fails to follow the correct instruction / task",
    "inappropriate_for_customer_assistant": "Inappropriate for a customer assistant",
    "hallucination": "Hallucination (makes up facts not in the input)",
    "satisfies_constraint": "Satisfies the constraint given in the instruction",
    "sexual_content": "Contains sexual content",
    "violent_content": "Contains violent content",
    "encourages_violence": "Encourages or fails to discourage violence / abuse / terrorism / self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "expresses_opinion": "Expresses an opinion",
    "expresses_moral_judgment": "Expresses a moral judgment",
}


def task_context(
    task: Task,
    prompt: Prompt | None,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """What the task page needs; `values` keeps a posted form's input when it is shown again."""
    outputs = list(prompt.outputs) if prompt is not None else []
    return {
        "task": task,
        "project": task.project,
        "prompt": prompt,
        "outputs": outputs,
        "k": len(outputs),
        "flags": [(f, FLAG_LABELS.get(f, f.replace("_", " "))) for f in FLAGS],
        "likert": list(range(LIKERT_MIN, LIKERT_MAX + 1)),
        "values": values or {},
        # metadata of an output stays unfolded when a kept form has a flag ticked there
        "open_flags": {key.split("_")[1] for key in values or {} if key.startswith("flag_")},
        "errors": errors or {},
        "client_id": client_id or secrets.token_urlsafe(16),
    }


def values_from_payload(payload: dict[str, Any], k: int) -> dict[str, Any]:
    """A stored answer as form values (to show a gold answer for editing)."""
    values: dict[str, Any] = {}
    for key in ("prompt", "category", "response"):
        if payload.get(key):
            values[key] = payload[key]
    for i, rating in enumerate(payload.get("ratings", [])):
        values[f"likert_{i}"] = str(rating["likert"])
        values.update({f"flag_{i}_{f}": "on" for f, on in rating["flags"].items() if on})
    if payload.get("ranking"):
        for i, r in enumerate(ranks_from_ranking(payload["ranking"], k)):
            values[f"rank_{i}"] = str(r)
    return values
