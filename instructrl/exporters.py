"""Our records in the shapes other tools read: TRL-style preference pairs from K-way
comparisons, and Hugging Face `datasets` folders or Parquet files of any record kind.

No torch here (the web app's export links use it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instructrl.errors import UserError
from instructrl.records import Comparison, PromptText

TABLE_FORMATS = ("jsonl", "datasets", "parquet")


def preference_pairs(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    """Every untied (winner, loser) pair of every comparison as a TRL-style row:
    `prompt`, `chosen`, `rejected` (text, or, for a chat-message prompt, one assistant message
    each, TRL's conversational form), plus `prompt_id` and `labeler`. A K-way ranking gives up
    to C(K, 2) rows, the pairs the paper's RM loss takes."""
    rows = []
    for c in comparisons:
        for winner, loser in c.pairs():
            rows.append(
                {
                    "prompt": c.prompt,
                    "chosen": _answer(c.prompt, c.responses[winner]),
                    "rejected": _answer(c.prompt, c.responses[loser]),
                    "prompt_id": c.prompt_id,
                    "labeler": c.labeler,
                }
            )
    return rows


def _answer(prompt: PromptText, text: str) -> Any:
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def table_rows(records: list[Any]) -> list[dict[str, Any]]:
    """Records as rows of one Arrow schema: a column holds one type, so when some prompts are
    chat messages every text prompt becomes one user message (what the chat template renders
    anyway), and a comparison's ranking (ties nested) is written as `ranks` (each response's
    rank, 0 best, tied responses share one)."""
    rows = [r if isinstance(r, dict) else r.to_dict() for r in records]
    chat = any(isinstance(r.get("prompt"), list) for r in rows)
    out = []
    for record, row in zip(records, rows, strict=True):
        row = dict(row)
        if chat and isinstance(row.get("prompt"), str):
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
        if isinstance(record, Comparison):
            row.pop("ranking")
            row["ranks"] = record.ranks()
        out.append(row)
    return out


def write_table(rows: list[dict[str, Any]], out: Path, fmt: str) -> Path:
    """Write rows as a `datasets` folder (`save_to_disk`, at OUT) or a Parquet file
    (OUT.parquet) through the `datasets` library; returns the path written."""
    if fmt not in ("datasets", "parquet"):
        raise UserError(f"export: format={fmt}: expected one of {', '.join(TABLE_FORMATS)}")
    try:
        import datasets
    except ImportError as e:
        raise UserError(
            f"export format={fmt}: the `datasets` package is not installed; "
            "pip install 'instructrl[datasets]'"
        ) from e
    datasets.disable_progress_bars()
    table = datasets.Dataset.from_list(rows)
    if fmt == "datasets":
        table.save_to_disk(str(out))
        return out
    path = out.with_suffix(".parquet")
    table.to_parquet(str(path))
    return path
