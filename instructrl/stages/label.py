"""`instructrl label`: the simulated labeler panel writes the records people would write.

- task=demonstrate: prompt records in, demonstration records out;
- task=rank: sample records in (K = 2..9 per prompt_id), comparison records out;
- task=rate: sample records in, rating records out (Likert 1-7 plus the paper's flags).
`labelers.calibration_agreement(...)` reports pairwise agreement within each group.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from instructrl import data
from instructrl.config import LabelConfig
from instructrl.labelers import Panel, items_from_samples, prompt_index
from instructrl.records import K_MAX, K_MIN, read_records, write_records

log = logging.getLogger(__name__)


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
