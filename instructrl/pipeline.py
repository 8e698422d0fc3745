"""`instructrl run`: the whole loop of the paper's Figure 2 on one config, stage by stage.

prompts -> panel demonstrations -> SFT -> K samples per prompt -> panel rankings -> RM
-> PPO and PPO-ptx -> evaluation report (and, with rounds > 1, more rankings of the newest
policy's samples, a retrained RM and more PPO-ptx).

Each stage writes `<root>/<name>/<stage>/` with a manifest.json (config, input keys, versions,
wall time, figures). A stage's key hashes its config and the keys of its inputs, so a rerun
skips every stage whose key is unchanged and redoes a changed stage and everything downstream
of it. A stage killed midway keeps its checkpoints and resumes from them on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instructrl import __version__, data, trainer
from instructrl.config import (
    EvalConfig,
    GenerateConfig,
    PPOConfig,
    RMConfig,
    RunConfig,
    SFTConfig,
    build,
    save_config,
)
from instructrl.errors import UserError
from instructrl.records import Prompt, read_records, write_records
from instructrl.rundir import read_metrics

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def file_key(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "instructrl": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


@dataclass
class StageResult:
    name: str
    path: Path
    key: str
    skipped: bool
    wall_s: float
    figures: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Runs stages with manifests: skip when the key matches, resume when a run was cut short."""

    def __init__(self, run_dir: Path, console: Any = None):
        self.run_dir = run_dir
        self.results: list[StageResult] = []
        self.console = console

    def stage(
        self,
        name: str,
        config: Any,
        inputs: dict[str, str],
        fn: Callable[[Path], dict[str, Any] | None],
    ) -> StageResult:
        path = self.run_dir / name
        config_json = json.dumps(
            config if isinstance(config, dict) else asdict(config), sort_keys=True, default=str
        )
        key = hashlib.sha256(
            json.dumps({"config": config_json, "inputs": inputs}, sort_keys=True).encode()
        ).hexdigest()[:16]
        manifest_path = path / MANIFEST
        old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if old and old.get("key") == key and old.get("complete"):
            result = StageResult(
                name, path, key, True, old.get("wall_s", 0.0), old.get("figures", {})
            )
            self._say(f"[dim]skip[/dim] {name} (unchanged, key {key})")
            self.results.append(result)
            return result
        if old and old.get("key") != key and path.exists():
            shutil.rmtree(path)  # config or inputs changed: start this stage afresh
        resuming = bool(old and old.get("key") == key)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "stage": name,
            "key": key,
            "complete": False,
            "config": json.loads(config_json),
            "inputs": inputs,
            "versions": _versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        manifest_path.write_text(json.dumps(manifest, indent=2))
        self._say(f"[bold]{'resume' if resuming else 'run'}[/bold] {name}")
        start = time.perf_counter()
        figures = fn(path) or {}
        wall = time.perf_counter() - start
        manifest.update(complete=True, wall_s=round(wall, 1), figures=figures)
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(manifest_path)
        self._say(
            f"[green]done[/green] {name} in {wall:.0f} s "
            + " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
            )
        )
        result = StageResult(name, path, key, False, wall, figures)
        self.results.append(result)
        return result

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)
        else:
            log.info(text)


def partition(cfg: RunConfig) -> dict[str, list[Prompt]]:
    """Disjoint prompt sets per stage (paper, Table 6), shuffled by seed within each split."""
    if cfg.prompts == "default":
        by_split = {s: data.load_prompts(s) for s in ("train", "val", "test")}
    else:
        records = read_records(cfg.prompts, "prompt")
        by_split = {
            s: [p for p in records if (p.split or "train") == s] for s in ("train", "val", "test")
        }
    train = [
        by_split["train"][i]
        for i in trainer.epoch_order(len(by_split["train"]), seed=cfg.seed, epoch=0)
    ]
    val = [
        by_split["val"][i]
        for i in trainer.epoch_order(len(by_split["val"]), seed=cfg.seed, epoch=0)
    ]
    a, b = cfg.sft_prompts, cfg.sft_prompts + cfg.rm_prompts
    if len(train) <= b:
        raise UserError(
            f"run: sft_prompts + rm_prompts = {b} leaves no training prompts for PPO (train split has {len(train)})"
        )
    ppo = train[b:][: cfg.ppo_prompts] if cfg.ppo_prompts else train[b:]
    # shuffled like the others, so a subset keeps the categories' proportions (the file is
    # ordered by category)
    test = [
        by_split["test"][i]
        for i in trainer.epoch_order(len(by_split["test"]), seed=cfg.seed, epoch=0)
    ]
    test = test[: cfg.eval_prompts] if cfg.eval_prompts else test
    if not val or not test:
        raise UserError("run: the prompts need val and test splits (split field)")
    return {
        "sft": train[:a],
        "rm": train[a:b],
        "ppo": ppo,
        "val": val[: cfg.val_prompts],
        "test": test,
    }


def _write_prompts(path: Path, prompts: list[Prompt]) -> str:
    write_records(path, prompts)
    return file_key(path)


def _last(metrics: Path, key: str) -> float | None:
    rows = [r for r in read_metrics(metrics) if key in r]
    return rows[-1][key] if rows else None


def run(cfg: RunConfig, console: Any = None) -> Path:
    """The whole loop. Returns the evaluation directory."""
    from instructrl.labelers import Panel
    from instructrl.stages import evaluate, generate, label, ppo, reward, sft

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    runner = Runner(run_dir, console)
    parts = partition(cfg)
    prompts_dir = run_dir / "prompts"
    keys = {name: _write_prompts(prompts_dir / f"{name}.jsonl", ps) for name, ps in parts.items()}
    panel_seed = {"seed": cfg.seed}

    # 1. demonstrations (panel or web app export)
    if cfg.feedback == "panel":

        def demos(out: Path) -> dict[str, Any]:
            panel = Panel("train", seed=cfg.seed)
            write_records(out / "train.jsonl", panel.demonstrate(parts["sft"]))
            write_records(out / "val.jsonl", panel.demonstrate(parts["val"]))
            return {"demonstrations": len(parts["sft"])}

        demo_stage = runner.stage(
            "demos", panel_seed, {"sft": keys["sft"], "val": keys["val"]}, demos
        )
        demos_train, demos_val = demo_stage.path / "train.jsonl", demo_stage.path / "val.jsonl"
        demo_key = demo_stage.key
    else:
        demos_train = Path(cfg.feedback) / "demonstrations.jsonl"
        if not demos_train.is_file():
            raise UserError(
                f"run: feedback={cfg.feedback}: expected demonstrations.jsonl there (the web app's export)"
            )
        demos_val, demo_key = None, file_key(demos_train)

    # 2. SFT
    sft_values = {"model": cfg.model, "data": str(demos_train), "seed": cfg.seed, **cfg.sft}
    if demos_val is not None:
        sft_values.setdefault("val_data", str(demos_val))

    def do_sft(out: Path) -> dict[str, Any]:
        sft.run(build(SFTConfig, {**sft_values, "out": str(out), "resume": True}))
        return {"val_loss": _last(out / "metrics.jsonl", "sft/val_loss")}

    sft_stage = runner.stage("sft", sft_values, {"demos": demo_key}, do_sft)

    # 3-5. K samples per prompt -> rankings -> reward model
    rm_stage, comparisons = _reward_round(
        cfg,
        runner,
        parts,
        keys,
        sft_stage,
        demos_train,
        demo_key,
        generate,
        label,
        reward,
        round_=1,
    )

    # 6. PPO and PPO-ptx from the SFT policy
    ppo_base = {
        "policy": str(sft_stage.path),
        "reward": str(rm_stage.path),
        "seed": cfg.seed,
        "prompts": str(prompts_dir / "ppo.jsonl"),
        **cfg.ppo,
    }

    def ppo_fn(values: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
        def do(out: Path) -> dict[str, Any]:
            ppo.run(build(PPOConfig, {**values, "out": str(out), "resume": True}))
            rows = read_metrics(out / "metrics.jsonl")
            return {
                "score_first": rows[0]["ppo/score"],
                "score_last": rows[-1]["ppo/score"],
                "kl_last": rows[-1]["ppo/kl"],
            }

        return do

    ppo_values = {**ppo_base, "ptx": "none"}
    ptx_values = {**ppo_base, "ptx": "default", **cfg.ptx}
    inputs = {"sft": sft_stage.key, "rm": rm_stage.key, "ppo_prompts": keys["ppo"]}
    ppo_stage = runner.stage("ppo", ppo_values, inputs, ppo_fn(ppo_values))
    ptx_stage = runner.stage("ppo-ptx", ptx_values, inputs, ppo_fn(ptx_values))

    # 7. more rounds: rank the newest policy's samples, retrain the RM, continue PPO-ptx
    if cfg.rounds > 1 and cfg.feedback != "panel":
        raise UserError(
            f"run: rounds={cfg.rounds} needs new rankings of the newest policy: use feedback=panel, or "
            f"rank its samples in the web app and run again with the new export"
        )
    for r in range(2, cfg.rounds + 1):
        rm_stage, comparisons = _reward_round(
            cfg,
            runner,
            parts,
            keys,
            ptx_stage,
            demos_train,
            demo_key,
            generate,
            label,
            reward,
            round_=r,
            previous=comparisons,
            init=sft_stage,
        )
        values = {**ptx_values, "policy": str(ptx_stage.path), "reward": str(rm_stage.path)}
        ptx_stage = runner.stage(
            f"ppo-ptx-r{r}", values, {"policy": ptx_stage.key, "rm": rm_stage.key}, ppo_fn(values)
        )

    # 8. evaluation
    policies = f"base:{cfg.model},sft:{sft_stage.path},ppo:{ppo_stage.path},ptx:{ptx_stage.path}"
    runs = f"sft:{sft_stage.path},rm:{rm_stage.path},ppo:{ppo_stage.path},ptx:{ptx_stage.path}"
    eval_values = {
        "policies": policies,
        "baseline": "sft",
        "prompts": str(prompts_dir / "test.jsonl"),
        "reward": str(rm_stage.path),
        "runs": runs,
        "seed": cfg.seed,
        **cfg.eval,
    }

    def do_eval(out: Path) -> dict[str, Any]:
        evaluate.run(build(EvalConfig, {**eval_values, "out": str(out)}))
        summary = json.loads((out / "summary.json").read_text())
        return {
            "ptx_over_sft": summary["win_rates"].get("ptx", {}).get("heldout", {}).get("win_rate")
        }

    eval_stage = runner.stage(
        "eval",
        eval_values,
        {
            "sft": sft_stage.key,
            "ppo": ppo_stage.key,
            "ptx": ptx_stage.key,
            "rm": rm_stage.key,
            "test": keys["test"],
        },
        do_eval,
    )
    (run_dir / "stages.json").write_text(
        json.dumps([{**asdict(r), "path": str(r.path)} for r in runner.results], indent=2)
    )
    return eval_stage.path


def _reward_round(
    cfg,
    runner,
    parts,
    keys,
    policy_stage,
    demos_train,
    demo_key,
    generate,
    label,
    reward,
    *,
    round_: int,
    previous: Path | None = None,
    init: StageResult | None = None,
) -> tuple[StageResult, Path]:
    """K samples from a policy on the RM prompts (and val prompts), panel rankings, an RM."""
    suffix = "" if round_ == 1 else f"-r{round_}"
    sample_values = {
        "model": str(policy_stage.path),
        "samples": cfg.k,
        "sampling": asdict(cfg.sampling),
    }

    def do_samples(out: Path) -> dict[str, Any]:
        for split in ("rm", "val"):
            gen = build(
                GenerateConfig,
                {
                    **sample_values,
                    "prompts": str(runner.run_dir / "prompts" / f"{split}.jsonl"),
                    "out": str(out / f"{split}.jsonl"),
                    "show": 0,
                },
            )
            generate.run(gen)
        return {"samples": cfg.k * len(parts["rm"])}

    if cfg.feedback == "panel":
        samples = runner.stage(
            f"samples{suffix}",
            sample_values,
            {"policy": policy_stage.key, "rm": keys["rm"], "val": keys["val"]},
            do_samples,
        )

        def do_rank(out: Path) -> dict[str, Any]:
            from instructrl.config import LabelConfig

            for panel, split, name in (
                ("train", "rm", "train"),
                ("train", "val", "val"),
                ("heldout", "val", "heldout"),
            ):
                label.run(
                    LabelConfig(
                        panel=panel,
                        task="rank",
                        input=str(samples.path / f"{split}.jsonl"),
                        prompts=str(runner.run_dir / "prompts" / f"{split}.jsonl"),
                        out=str(out / f"{name}.jsonl"),
                        seed=cfg.seed,
                    )
                )
            if previous is not None:  # later rounds add to, not replace, the comparisons so far
                merged = read_records(previous, "comparison") + read_records(
                    out / "train.jsonl", "comparison"
                )
                write_records(out / "train.jsonl", merged)
            return {"comparisons": len(read_records(out / "train.jsonl", "comparison"))}

        ranks = runner.stage(
            f"rankings{suffix}",
            {"seed": cfg.seed},
            {"samples": samples.key, "previous": str(previous)},
            do_rank,
        )
        comparisons, val, heldout, rank_key = (
            ranks.path / "train.jsonl",
            ranks.path / "val.jsonl",
            ranks.path / "heldout.jsonl",
            ranks.key,
        )
    else:
        comparisons = Path(cfg.feedback) / "comparisons.jsonl"
        if not comparisons.is_file():
            raise UserError(
                f"run: feedback={cfg.feedback}: expected comparisons.jsonl there (the web app's export)"
            )
        val = None
        # the web app exports held-out labelers' rankings apart: accuracy only, never training
        heldout = Path(cfg.feedback) / "heldout" / "comparisons.jsonl"
        heldout = heldout if heldout.is_file() else None
        rank_key = file_key(comparisons) + (f"+{file_key(heldout)}" if heldout else "")
    base = init or policy_stage
    rm_values = {
        "model": str(base.path),
        "data": str(comparisons),
        "demos": str(demos_train),
        "seed": cfg.seed,
        **cfg.rm,
    }
    if val is not None:
        rm_values["val_data"] = str(val)
    if heldout is not None:
        rm_values["heldout_data"] = str(heldout)

    def do_rm(out: Path) -> dict[str, Any]:
        reward.run(build(RMConfig, {**rm_values, "out": str(out), "resume": True}))
        m = out / "metrics.jsonl"
        return {
            "val_accuracy": _last(m, "rm/val_accuracy"),
            "heldout_accuracy": _last(m, "rm/heldout_accuracy"),
        }

    rm_stage = runner.stage(
        f"rm{suffix}", rm_values, {"init": base.key, "rankings": rank_key, "demos": demo_key}, do_rm
    )
    return rm_stage, comparisons


def headline(eval_dir: Path) -> list[tuple[str, str]]:
    """The figures a person wants first, from summary.json."""
    summary = json.loads((eval_dir / "summary.json").read_text())
    rows = []
    for name, by in summary.get("win_rates", {}).items():
        w = by["heldout"]
        rows.append(
            (
                f"{name} vs {w['baseline']} (held-out labelers)",
                f"{100 * w['win_rate']:.1f} % [{100 * w['ci95'][0]:.1f}, {100 * w['ci95'][1]:.1f}]",
            )
        )
    if summary.get("rm", {}).get("val_accuracy") is not None:
        rows.append(("RM validation accuracy", f"{100 * summary['rm']['val_accuracy']:.1f} %"))
    for g, a in summary.get("agreement", {}).items():
        rows.append((f"labeler agreement ({g})", f"{100 * a['agreement']:.1f} %"))
    for name, ppl in summary.get("perplexity", {}).items():
        rows.append((f"held-out perplexity {name}", f"{ppl:.2f}"))
    return rows
