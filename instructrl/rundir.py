"""Run-directory I/O shared by the training stages: metrics.jsonl, atomic checkpoints, model
directories installed into place.

Checkpoints and models are written into a temp dir and renamed into place, so a kill mid-save
leaves the previous one intact. No torch at import (the report reads metrics through here).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from instructrl.config import TRACKERS

STATE_FILE = "trainer_state.json"


class Trackers:
    """`report_to=`: the rows of metrics.jsonl also go to experiment trackers, through
    accelerate's tracker classes: TensorBoard event files, wandb offline, mlflow and trackio,
    all kept under OUT/tracking/ (wandb's folder and mlflow's SQLite store there unless
    WANDB_DIR / MLFLOW_TRACKING_URI say otherwise). Only the main process logs."""

    def __init__(
        self,
        report_to: list[str],
        out: Path,
        run_name: str,
        config: dict[str, Any],
        *,
        enabled: bool = True,
    ):
        self.trackers: list[Any] = []
        if not enabled or not report_to:
            return
        import importlib.util

        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        root = (out / "tracking").resolve()
        root.mkdir(parents=True, exist_ok=True)
        for name in report_to:  # names checked by the config (config.check_report_to)
            packages = TRACKERS[name]
            if not any(importlib.util.find_spec(p) for p in packages):
                from instructrl.errors import UserError

                raise UserError(
                    f"report_to={name}: the {packages[0]} package is not installed; "
                    f"pip install {packages[0]} (or the instructrl[{name}] extra)"
                )
            cls = LOGGER_TYPE_TO_CLASS[name]
            if name == "tensorboard":
                tracker = cls(run_name, str(root))
            elif name == "mlflow":  # a SQLite store (MLflow 3 refuses new file stores)
                _default_env("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
                tracker = cls(experiment_name=run_name, logging_dir=str(root / "mlruns"))
            else:
                if name == "wandb":  # these machines reach no service: offline unless told
                    _default_env("WANDB_MODE", "offline")
                    _default_env("WANDB_DIR", str(root))
                tracker = cls(run_name)
            tracker.start()
            tracker.store_init_configuration(flat_config(config))
            self.trackers.append(tracker)

    def log(self, row: dict[str, Any]) -> None:
        """The numbers of one metrics row at its step."""
        values = {
            k: v
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for tracker in self.trackers:
            tracker.log(values, step=row.get("step"))

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def open_trackers(cfg: Any, main: bool, name: str) -> Trackers | None:
    """A stage's `report_to=` trackers (main process only), its config as hyperparameters."""
    if not cfg.report_to:
        return None
    import dataclasses

    return Trackers(list(cfg.report_to), Path(cfg.out), name, dataclasses.asdict(cfg), enabled=main)


# the tracker settings the user gave before we started: kept; ours change with each stage's OUT
_USER_ENV = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_DIR")}


def _default_env(key: str, value: str) -> None:
    if _USER_ENV.get(key) is None:
        os.environ[key] = value


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys with scalar values (what trackers store as hyperparameters)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


class MetricsLog:
    """Appends one JSON row per call to out/metrics.jsonl (flushed, so a crash loses nothing).
    Under several processes only the main one writes (`enabled=accelerator.is_main_process`).
    `trackers`: the same rows to the `report_to=` experiment trackers."""

    def __init__(
        self,
        path: Path,
        *,
        truncate_after_step: int | None = None,
        enabled: bool = True,
        trackers: Trackers | None = None,
    ):
        self.path, self.enabled, self.trackers = path, enabled, trackers
        if not enabled:
            return
        if (
            truncate_after_step is not None and path.exists()
        ):  # resume: drop rows past the checkpoint
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r.get("step", 0) <= truncate_after_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif truncate_after_step is None:
            path.write_text("")

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
                )
                + "\n"
            )
        if self.trackers is not None:
            self.trackers.log(row)

    def close(self) -> None:
        """Flush and close the trackers (metrics.jsonl itself is flushed at every row)."""
        if self.trackers is not None:
            self.trackers.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Checkpointer:
    """out/checkpoints/step-N: accelerate state (model, optimizer, scheduler, RNG) + trainer state."""

    def __init__(self, out: Path, keep_last: int):
        self.root = out / "checkpoints"
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        done = (
            [p for p in self.root.glob("step-*") if (p / STATE_FILE).is_file()]
            if self.root.exists()
            else []
        )
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def save(self, accelerator: Any, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{state['step']}"
        tmp = self.root / f".tmp-step-{state['step']}"
        if accelerator.is_main_process:  # before any process writes its part of the state
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        # every process has written its part (its RNG states) before the directory is made
        # final: a kill after the rename then always finds a complete checkpoint
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            for old in sorted(self.root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[
                : -self.keep_last
            ]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def load(self, accelerator: Any, path: Path) -> dict[str, Any]:
        accelerator.load_state(str(path))
        return json.loads((path / STATE_FILE).read_text())


def save_hf_model(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    out: Path,
    *,
    merge: bool = True,
    extra_files: dict[str, str] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Save a plain HF directory atomically (LoRA merged unless merge=False). Every process
    calls it: gathering a sharded (FSDP / ZeRO-3) state dict is a collective; the main process
    writes, and all return once the directory is in place. `state_dict`: the model's weights,
    already gathered (a model trained inside another module's engine)."""
    accelerator.wait_for_everyone()
    full = (  # all ranks: a collective under FSDP / ZeRO-3
        accelerator.get_state_dict(model) if state_dict is None else state_dict
    )
    if accelerator.is_main_process:
        _write_hf_model(accelerator.unwrap_model(model), full, tokenizer, out, merge, extra_files)
    accelerator.wait_for_everyone()
    return out


def _write_hf_model(
    model: Any,
    full: dict[str, Any],
    tokenizer: Any,
    out: Path,
    merge: bool,
    extra_files: dict[str, str] | None,
) -> None:
    import torch

    if merge and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model)
        with torch.no_grad():  # the gathered weights, then the adapters merged into them
            model.load_state_dict(full, strict=False)
        model = model.merge_and_unload()
        full = model.state_dict()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # tied weights (SmolLM2's embedding and unembedding) once, as save_pretrained writes them
    # from a module's own state dict: a gathered one (DeepSpeed) holds a separate copy of each
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    tied = {name for group in names.values() for name in group[1:]}
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in full.items() if k not in tied}
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def install(source: Path, out: Path, marker: str, content: str) -> None:
    """Move a finished model directory's files into out/ one by one (os.replace), then write
    the marker last: a crash leaves either the complete source or missing files, never a mix.
    Every model directory gets its model card (README.md) first."""
    for model_dir in [source, *(d for d in source.iterdir() if d.is_dir())]:
        if (model_dir / "config.json").is_file():  # a model directory
            write_model_card(model_dir, out, content)
    (out / marker).unlink(missing_ok=True)
    for f in source.iterdir():
        if (out / f.name).is_dir():
            shutil.rmtree(out / f.name)
        os.replace(f, out / f.name)
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the stage is complete
    (out / marker).write_text(content)


KINDS_OF_MODEL = {
    "reward": ("reward model", "text-classification"),
    "value": ("PPO value model", "text-classification"),
    None: ("policy", "text-generation"),
}


def write_model_card(model_dir: Path, run_dir: Path, selected: str = "") -> Path:
    """README.md for a model directory, as the Hugging Face hub expects one: metadata (base
    model, library, tags) through huggingface_hub's ModelCard, then the base model, the data,
    the stage's config (run_dir/config.yaml), its last metrics and the command that made it."""
    import shlex
    import sys

    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    config_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    model_cfg = json.loads((model_dir / "config.json").read_text())
    kind = (model_cfg.get("instructrl") or {}).get("type")
    what, pipeline = KINDS_OF_MODEL.get(kind, KINDS_OF_MODEL[None])
    from instructrl.models import DEFAULT_MODEL, DEFAULT_NAME

    base = cfg.get("model") or cfg.get("policy") or "unknown"
    if base == DEFAULT_MODEL:  # the embedded default is this hub model, converted from GGUF
        base = f"HuggingFaceTB/{DEFAULT_NAME}"
    hub_id = isinstance(base, str) and base.count("/") == 1 and not Path(base).exists()
    data = {
        k: cfg[k]
        for k in ("data", "demos", "prompts", "heldout_data", "reward", "ptx")
        if cfg.get(k)
    }
    last: dict[str, Any] = {}
    for row in read_metrics(run_dir / "metrics.jsonl"):
        last.update(row)
    metadata = ModelCardData(
        library_name="transformers",
        base_model=base if hub_id else None,
        pipeline_tag=pipeline,
        tags=["instructrl", "rlhf", "instructgpt", *([kind] if kind else [])],
    )
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    program = "instructrl" if program in ("instructrl", "cli.py") else f"python {sys.argv[0]}"
    command = " ".join([program, *map(shlex.quote, sys.argv[1:])])
    lines = [
        "---",
        metadata.to_yaml(),
        "---",
        "",
        f"# {run_dir.name}: an instructrl {what}",
        "",
        "Made by instructrl, an implementation of Ouyang et al. (2022), *Training language",
        "models to follow instructions with human feedback*.",
        "",
        f"- Base model: `{base}`",
        *[f"- {k}: `{v}`" for k, v in data.items()],
        f"- Architecture: {', '.join(model_cfg.get('architectures') or ['?'])}",
        *([f"- Selected: `{selected.strip()}`"] if selected.strip() else []),
        f"- Command: `{command}`",
        "",
    ]
    if kind == "reward":
        lines += [
            "Load it with `AutoModelForSequenceClassification.from_pretrained(DIR)`: the reward is",
            f"the logit plus `instructrl.bias` = {(model_cfg.get('instructrl') or {}).get('bias')}"
            " from config.json (instructrl's loader adds it). Pad on the right.",
            "",
        ]
    if last:
        lines += ["## Last metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in last.items() if isinstance(v, (int, float))]
        lines.append("")
    if cfg:
        lines += [
            "## Config",
            "",
            "```yaml",
            yaml.safe_dump(cfg, sort_keys=False).rstrip(),
            "```",
            "",
        ]
    card = ModelCard("\n".join(lines))
    card.save(str(model_dir / "README.md"))
    return model_dir / "README.md"
