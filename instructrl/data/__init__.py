"""The shipped default data (built by `python -m instructrl.data.build`; see its docstring).

- `prompts.jsonl`: prompt records across the paper's use-case categories, split train/val/test
- `adversarial.jsonl`: harmful, toxic-bait and false-premise prompts (evaluation only)
- `heldout_text.jsonl`: plain prose for the pretraining mix (`ptx`) and regression checks (`eval`)
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from instructrl.records import Prompt, read_records

DATA_DIR = Path(__file__).parent
PROMPTS = DATA_DIR / "prompts.jsonl"
ADVERSARIAL = DATA_DIR / "adversarial.jsonl"
HELDOUT_TEXT = DATA_DIR / "heldout_text.jsonl"
MANIFEST = DATA_DIR / "manifest.json"


@cache
def _prompts(path: Path) -> tuple[Prompt, ...]:
    return tuple(read_records(path, "prompt"))


def load_prompts(
    split: str | None = None, *, category: str | None = None, path: Path = PROMPTS
) -> list[Prompt]:
    """Shipped prompt records, optionally one split and/or one category."""
    return [
        p
        for p in _prompts(path)
        if (split is None or p.split == split) and (category is None or p.category == category)
    ]


def load_adversarial() -> list[Prompt]:
    return list(_prompts(ADVERSARIAL))


def load_heldout_text(split: str | None = None) -> list[dict[str, Any]]:
    """Held-out prose documents `{"id", "text", "source", "split"}`; split is `ptx` or `eval`."""
    with HELDOUT_TEXT.open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    return [d for d in docs if split is None or d["split"] == split]


def manifest() -> dict[str, Any]:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def stats() -> dict[str, Any]:
    """Counts by category, split and constraint kind, and the held-out text's size in tokens."""
    prompts = load_prompts()
    kinds = Counter(c["kind"] for p in prompts for c in p.constraints or [])
    return {
        "prompts": len(prompts),
        "by_category": dict(Counter(p.category for p in prompts).most_common()),
        "by_split": dict(Counter(p.split for p in prompts).most_common()),
        "constrained_prompts": sum(1 for p in prompts if p.constraints),
        "constraint_kinds": len(kinds),
        "by_constraint_kind": dict(kinds.most_common()),
        "adversarial_prompts": len(load_adversarial()),
        "heldout_text_documents": len(load_heldout_text()),
        "heldout_text_tokens": manifest()["heldout_text"]["tokens"],
    }
