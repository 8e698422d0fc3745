"""`instructrl generate`: sample completions from a policy as `sample` records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from instructrl import models, rollout
from instructrl.config import GenerateConfig
from instructrl.records import Prompt, Sample, prompt_as_text, read_records, write_records


def _prompts(cfg: GenerateConfig) -> list[Prompt]:
    if cfg.prompt is not None:
        return [Prompt(id="prompt-0", prompt=cfg.prompt)]
    prompts = read_records(cfg.prompts, "prompt")
    return prompts[: cfg.limit] if cfg.limit else prompts


def run(cfg: GenerateConfig) -> Path | None:
    """Generate cfg.samples samples per prompt; write them to cfg.out (JSONL) or print them to stdout."""
    prompts = _prompts(cfg)
    device = models.pick_device(cfg.device)
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_policy(cfg.model, device=device)
    kept = rollout.encode_within(
        tokenizer,
        prompts,
        max_prompt_tokens=cfg.max_prompt_tokens,
        where="generate",
        chat_template=cfg.chat_template,
    )
    samples = rollout.sample_records(
        rollout.Engine(model, tokenizer, cfg.rollout),
        [p for p, _ in kept],
        [ids for _, ids in kept],
        cfg.sampling,
        model_name=models.model_name(cfg.model),
        seed=cfg.sampling.seed,
        samples_per_prompt=cfg.samples,
    )
    if cfg.out is None:
        for sample in samples:
            sys.stdout.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
        return None
    show_samples(samples[: cfg.show])
    return write_records(cfg.out, samples)


def show_samples(samples: list[Sample]) -> None:
    """Prompt / response pairs for a person watching (stderr, so stdout stays machine-readable)."""
    if not samples:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=True, title=f"{samples[0].model}: sample responses")
    table.add_column("prompt", ratio=1)
    table.add_column("response", ratio=2)
    for s in samples:
        table.add_row(prompt_as_text(s.prompt), s.response + f"  [dim]({s.finish_reason})[/dim]")
    Console(stderr=True).print(table)
