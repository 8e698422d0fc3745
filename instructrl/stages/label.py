"""`instructrl label`: the simulated labeler panel writes the records people would write.

- task=demonstrate: prompt records in, demonstration records out;
- task=rank: sample records in (K = 2..9 per prompt_id), comparison records out;
- task=rate: sample records in, rating records out (Likert 1-7 plus the paper's flags).
`agreement(...)` reports pairwise agreement between the labelers of each group.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from instructrl import data
from instructrl.config import LabelConfig
from instructrl.errors import RecordError, UserError
from instructrl.labelers import Item, Judge, Panel, panel_agreement
from instructrl.records import K_MAX, K_MIN, Prompt, read_numbered, read_records, write_records

log = logging.getLogger(__name__)
CALIBRATION_SAMPLES = data.DATA_DIR / "calibration_samples.jsonl"


def prompt_index(path: str | None) -> dict[str, Prompt]:
    """Prompt records by id: the given file, else the shipped prompts and adversarial prompts."""
    records = (
        read_records(path, "prompt") if path else [*data.load_prompts(), *data.load_adversarial()]
    )
    return {p.id: p for p in records}


def items_from_samples(
    path: str | Path, prompts: dict[str, Prompt], *, k_range: tuple[int, int] | None
) -> list[Item]:
    """Group sample records by prompt_id (file order); K outside k_range is a path:line error."""
    groups: OrderedDict[str, list[tuple[int, Any]]] = OrderedDict()
    for number, sample in read_numbered(path, "sample"):
        groups.setdefault(sample.prompt_id, []).append((number, sample))
    problems = []
    items = []
    for pid, rows in groups.items():
        if k_range and not k_range[0] <= len(rows) <= k_range[1]:
            problems.append(
                f"{path}:{rows[0][0]}: prompt_id: expected {k_range[0]} to {k_range[1]} samples "
                f"for {pid!r}, got {len(rows)}"
            )
            continue
        prompt = prompts.get(pid) or Prompt(id=pid, prompt=rows[0][1].prompt)
        items.append(
            Item(
                prompt=prompt,
                responses=[s.response for _, s in rows],
                finish_reasons=[s.finish_reason for _, s in rows],
            )
        )
    if problems:
        raise RecordError(problems[:20], len(problems))
    return items


def run(cfg: LabelConfig) -> Path:
    panel = Panel(cfg.panel, seed=cfg.seed)
    if cfg.task == "demonstrate":
        prompts = read_records(cfg.input, "prompt") if cfg.input else data.load_prompts(cfg.split)
        prompts = prompts[: cfg.limit] if cfg.limit else prompts
        records: list[Any] = panel.demonstrate(prompts)
    else:
        index = prompt_index(cfg.prompts)
        items = items_from_samples(
            cfg.input, index, k_range=(K_MIN, K_MAX) if cfg.task == "rank" else None
        )
        items = items[: cfg.limit] if cfg.limit else items
        records = (
            panel.rank(items, labelers_per_item=cfg.labelers_per_item)
            if cfg.task == "rank"
            else panel.rate(items)
        )
    out = Path(cfg.out) if cfg.out else Path("runs") / f"{cfg.task}-{cfg.panel}.jsonl"
    log.info(
        "%s panel: %d %s records", cfg.panel, len(records), records[0].kind if records else cfg.task
    )
    return write_records(out, records)


def agreement(
    input_path: str | None = None, *, prompts: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """Pairwise agreement within each group on K samples per prompt (default: the shipped
    calibration samples of the default model)."""
    path = input_path or CALIBRATION_SAMPLES
    if not Path(path).is_file():
        raise UserError(
            f"agreement: {path} not found; pass --input SAMPLES.jsonl (K samples per prompt)"
        )
    items = items_from_samples(path, prompt_index(prompts), k_range=(K_MIN, K_MAX))
    judge = Judge()
    return {
        group: panel_agreement(items, group, seed=seed, judge=judge)
        for group in ("train", "heldout")
    }
