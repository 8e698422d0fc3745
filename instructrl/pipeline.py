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

from instructrl import __version__, data, models, trainer
from instructrl.config import (
    EvalConfig,
    GenerateConfig,
    LabelConfig,
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
from instructrl.stages import evaluate, generate, label, ppo, reward, sft

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


def processes() -> Any | None:
    """accelerate's process state when `instructrl run` was started in several processes
    (torchrun / accelerate launch), else None. Its process group waits up to 24 h at a barrier:
    the other processes wait there while the main one labels, samples or evaluates."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=24))


class Runner:
    """Runs stages with manifests: skip when the key matches, resume when a run was cut short.

    Under several processes every process walks the same stages: training stages
    (`every_process=True`) run in all of them, the others (labeling, sampling, evaluation) in
    the main process only, and the main process alone writes manifests, with a barrier between
    steps, so no process reads what another has not finished writing.
    """

    def __init__(self, run_dir: Path, console: Any = None, state: Any = None):
        self.run_dir = run_dir
        self.results: list[StageResult] = []
        self.console = console
        self.state = state  # processes(), or None for one process

    @property
    def main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def stage(
        self,
        name: str,
        config: Any,
        inputs: dict[str, str],
        fn: Callable[[Path], dict[str, Any] | None],
        *,
        every_process: bool = False,
    ) -> StageResult:
        path = self.run_dir / name
        config_json = json.dumps(
            config if isinstance(config, dict) else asdict(config), sort_keys=True, default=str
        )
        key = hashlib.sha256(
            json.dumps({"config": config_json, "inputs": inputs}, sort_keys=True).encode()
        ).hexdigest()[:16]
        manifest_path = path / MANIFEST
        self.barrier()  # every process decides on the same manifest
        old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if old and old.get("key") == key and old.get("complete"):
            result = StageResult(
                name, path, key, True, old.get("wall_s", 0.0), old.get("figures", {})
            )
            self._say(f"[dim]skip[/dim] {name} (unchanged, key {key})")
            self.results.append(result)
            return result
        self.barrier()
        if self.main and old and old.get("key") != key and path.exists():
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
        if self.main:
            manifest_path.write_text(json.dumps(manifest, indent=2))
        self.barrier()
        self._say(f"[bold]{'resume' if resuming else 'run'}[/bold] {name}")
        start = time.perf_counter()
        if every_process:
            figures = fn(path) or {}
        elif self.main:  # one process: models load whole even under a ZeRO-3 config (loading
            with models.whole_weights():  # them as shards would wait for the others)
                figures = fn(path) or {}
        else:
            figures = {}
        wall = time.perf_counter() - start
        self.barrier()
        manifest.update(complete=True, wall_s=round(wall, 1), figures=figures)
        if self.main:
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
        if not self.main:
            return
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


def _last(metrics: Path, key: str) -> float | None:
    rows = [r for r in read_metrics(metrics) if key in r]
    return rows[-1][key] if rows else None


@dataclass
class Loop:
    """One run of the loop: its config, the stage runner and the prompt files by stage."""

    cfg: RunConfig
    runner: Runner
    prompt_keys: dict[str, str]  # stage -> key of <run>/prompts/<stage>.jsonl

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def prompts(self, part: str) -> Path:
        return self.run_dir / "prompts" / f"{part}.jsonl"

    def path(self, stage: str) -> Path:
        return self.run_dir / stage


def run(cfg: RunConfig, console: Any = None) -> Path:
    """The loop of the paper's Figure 2, one named step each. Returns the evaluation directory."""
    loop = start(cfg, console)
    demos = collect_demonstrations(loop)
    sft = supervised_fine_tuning(loop, demos)
    rm, comparisons = reward_model(loop, policy=sft, init=sft, demos=demos, round_=1)
    ppo, ptx = reinforcement_learning(loop, sft, rm)
    for round_ in range(2, cfg.rounds + 1):  # rank the newest policy's samples, retrain, go on
        rm, comparisons = reward_model(
            loop, policy=ptx, init=sft, demos=demos, round_=round_, previous=comparisons
        )
        ptx = continue_ppo_ptx(loop, ptx, rm, round_)
    evaluation = evaluate_policies(loop, sft=sft, ppo=ppo, ptx=ptx, rm=rm)
    if loop.runner.main:
        (cfg.run_dir / "stages.json").write_text(
            json.dumps([{**asdict(r), "path": str(r.path)} for r in loop.runner.results], indent=2)
        )
    loop.runner.barrier()
    return evaluation.path


def start(cfg: RunConfig, console: Any = None) -> Loop:
    """Check every stage section against its typed config (a typo fails here, before any stage
    runs), then write the disjoint prompt sets of the stages."""
    if cfg.rounds > 1 and cfg.feedback != "panel":
        raise UserError(
            f"run: rounds={cfg.rounds} needs new rankings of the newest policy: use feedback=panel, or "
            f"rank its samples in the web app and run again with the new export"
        )
    check_sections(cfg)
    runner = Runner(cfg.run_dir, console, processes())
    prompts_dir = cfg.run_dir / "prompts"
    parts = partition(cfg)
    if runner.main:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg.run_dir / "config.yaml")
        for name, ps in parts.items():
            write_records(prompts_dir / f"{name}.jsonl", ps)
    runner.barrier()
    keys = {name: file_key(prompts_dir / f"{name}.jsonl") for name in parts}
    return Loop(cfg, runner, keys)


def check_sections(cfg: RunConfig) -> dict[str, Any]:
    """Every stage's typed config as the run will build it (the paths its stages will write):
    an unknown or mistyped key fails with its path in the run config, e.g. `ppo.lr`."""
    run_dir = cfg.run_dir
    demos = _demo_paths(cfg, run_dir / "demos")
    rankings = run_dir / "rankings" if cfg.feedback == "panel" else Path(cfg.feedback)
    rm = _rm_values(cfg, run_dir / "sft", rankings, demos[0])
    ppo = _ppo_values(cfg, run_dir / "sft", run_dir / "rm", run_dir / "prompts" / "ppo.jsonl")
    eval_ = _eval_values(cfg, {s: run_dir / s for s in ("sft", "rm", "ppo", "ppo-ptx")})
    out = {"out": str(run_dir / "check")}
    return {
        "sft": build(SFTConfig, {**_sft_values(cfg, *demos), **out}, section="sft"),
        "rm": build(RMConfig, {**rm, **out}, section="rm"),
        "ppo": build(PPOConfig, {**ppo, "ptx": "none", **out}, section="ppo"),
        "ptx": build(PPOConfig, {**ppo, "ptx": "default", **cfg.ptx, **out}, section="ptx"),
        "eval": build(EvalConfig, {**eval_, **out}, section="eval"),
    }


# ----------------------------------------------------------------------------- the steps
def collect_demonstrations(loop: Loop) -> tuple[Path, Path | None, str]:
    """Step 1: labelers write demonstrations for the SFT and validation prompts (the simulated
    panel's training group, or people in the web app). Returns (train, val, key)."""
    cfg = loop.cfg
    train, val = _demo_paths(cfg, loop.path("demos"))
    if cfg.feedback != "panel":
        if not train.is_file():
            raise UserError(
                f"run: feedback={cfg.feedback}: expected demonstrations.jsonl there (the web app's export)"
            )
        return train, None, file_key(train)

    def demonstrate(out: Path) -> dict[str, Any]:
        for part, name in (("sft", "train"), ("val", "val")):
            label.run(
                LabelConfig(
                    panel="train",
                    task="demonstrate",
                    input=str(loop.prompts(part)),
                    out=str(out / f"{name}.jsonl"),
                    seed=cfg.seed,
                )
            )
        return {"demonstrations": len(read_records(out / "train.jsonl", "demonstration"))}

    inputs = {"sft": loop.prompt_keys["sft"], "val": loop.prompt_keys["val"]}
    stage = loop.runner.stage("demos", {"seed": cfg.seed}, inputs, demonstrate)
    return train, val, stage.key


def supervised_fine_tuning(loop: Loop, demos: tuple[Path, Path | None, str]) -> StageResult:
    """Step 2: fine-tune the pretrained model on the demonstrations."""
    values = _sft_values(loop.cfg, demos[0], demos[1])

    def fine_tune(out: Path) -> dict[str, Any]:
        sft.run(build(SFTConfig, {**values, "out": str(out), "resume": True}, section="sft"))
        return {"val_loss": _last(out / "metrics.jsonl", "sft/val_loss")}

    return loop.runner.stage("sft", values, {"demos": demos[2]}, fine_tune, every_process=True)


def reward_model(
    loop: Loop,
    *,
    policy: StageResult,
    init: StageResult,
    demos: tuple[Path, Path | None, str],
    round_: int,
    previous: Path | None = None,
) -> tuple[StageResult, Path]:
    """Steps 3-5: K samples of a policy per prompt, labelers' rankings, an RM trained from
    `init` (the SFT model). Returns the RM stage and the training comparisons."""
    suffix = "" if round_ == 1 else f"-r{round_}"
    if loop.cfg.feedback == "panel":
        samples = sample_outputs(loop, policy, suffix)
        rankings, rank_key = rank_outputs(loop, samples, suffix, previous)
    else:
        rankings, rank_key = _web_rankings(loop.cfg)
    values = _rm_values(loop.cfg, init.path, rankings, demos[0])

    def train_rm(out: Path) -> dict[str, Any]:
        reward.run(build(RMConfig, {**values, "out": str(out), "resume": True}, section="rm"))
        m = out / "metrics.jsonl"
        return {
            "val_accuracy": _last(m, "rm/val_accuracy"),
            "heldout_accuracy": _last(m, "rm/heldout_accuracy"),
        }

    inputs = {"init": init.key, "rankings": rank_key, "demos": demos[2]}
    stage = loop.runner.stage(f"rm{suffix}", values, inputs, train_rm, every_process=True)
    return stage, Path(values["data"])


def sample_outputs(loop: Loop, policy: StageResult, suffix: str) -> StageResult:
    """Step 3: K samples per RM prompt and validation prompt from the policy."""
    cfg = loop.cfg
    values = {
        "model": str(policy.path),
        "samples": cfg.k,
        "sampling": asdict(cfg.sampling),
        "rollout": asdict(cfg.rollout),
    }

    def sample(out: Path) -> dict[str, Any]:
        for part in ("rm", "val"):
            generate.run(
                build(
                    GenerateConfig,
                    {
                        **values,
                        "prompts": str(loop.prompts(part)),
                        "out": str(out / f"{part}.jsonl"),
                        "show": 0,
                    },
                )
            )
        return {"samples": cfg.k * len(read_records(loop.prompts("rm"), "prompt"))}

    inputs = {"policy": policy.key, "rm": loop.prompt_keys["rm"], "val": loop.prompt_keys["val"]}
    return loop.runner.stage(f"samples{suffix}", values, inputs, sample)


def rank_outputs(
    loop: Loop, samples: StageResult, suffix: str, previous: Path | None
) -> tuple[Path, str]:
    """Step 4: training labelers rank the RM and validation samples, held-out labelers the
    validation samples (accuracy only). Later rounds add to the comparisons so far."""

    def rank(out: Path) -> dict[str, Any]:
        for panel, part, name in (
            ("train", "rm", "train"),
            ("train", "val", "val"),
            ("heldout", "val", "heldout"),
        ):
            label.run(
                LabelConfig(
                    panel=panel,
                    task="rank",
                    input=str(samples.path / f"{part}.jsonl"),
                    prompts=str(loop.prompts(part)),
                    out=str(out / f"{name}.jsonl"),
                    seed=loop.cfg.seed,
                )
            )
        if previous is not None:
            merged = read_records(previous, "comparison") + read_records(
                out / "train.jsonl", "comparison"
            )
            write_records(out / "train.jsonl", merged)
        return {"comparisons": len(read_records(out / "train.jsonl", "comparison"))}

    inputs = {"samples": samples.key, "previous": str(previous)}
    stage = loop.runner.stage(f"rankings{suffix}", {"seed": loop.cfg.seed}, inputs, rank)
    return stage.path, stage.key


def _web_rankings(cfg: RunConfig) -> tuple[Path, str]:
    """The web app's export as the rankings directory (comparisons.jsonl, heldout/...)."""
    comparisons = Path(cfg.feedback) / "comparisons.jsonl"
    if not comparisons.is_file():
        raise UserError(
            f"run: feedback={cfg.feedback}: expected comparisons.jsonl there (the web app's export)"
        )
    heldout = Path(cfg.feedback) / "heldout" / "comparisons.jsonl"
    key = file_key(comparisons) + (f"+{file_key(heldout)}" if heldout.is_file() else "")
    return Path(cfg.feedback), key


def reinforcement_learning(
    loop: Loop, sft_stage: StageResult, rm: StageResult
) -> tuple[StageResult, StageResult]:
    """Step 6: PPO and PPO-ptx from the SFT policy against the RM."""
    values = _ppo_values(loop.cfg, sft_stage.path, rm.path, loop.prompts("ppo"))
    inputs = {"sft": sft_stage.key, "rm": rm.key, "ppo_prompts": loop.prompt_keys["ppo"]}
    ppo_values = {**values, "ptx": "none"}
    ptx_values = {**values, "ptx": "default", **loop.cfg.ptx}
    ppo_stage = loop.runner.stage(
        "ppo", ppo_values, inputs, _ppo_step(ppo_values, "ppo"), every_process=True
    )
    ptx_stage = loop.runner.stage(
        "ppo-ptx", ptx_values, inputs, _ppo_step(ptx_values, "ptx"), every_process=True
    )
    return ppo_stage, ptx_stage


def continue_ppo_ptx(
    loop: Loop, ptx_stage: StageResult, rm: StageResult, round_: int
) -> StageResult:
    """Step 7 (rounds > 1): more PPO-ptx from the newest policy against the new RM."""
    values = _ppo_values(loop.cfg, ptx_stage.path, rm.path, loop.prompts("ppo"))
    values = {**values, "ptx": "default", **loop.cfg.ptx}
    inputs = {"policy": ptx_stage.key, "rm": rm.key}
    return loop.runner.stage(
        f"ppo-ptx-r{round_}", values, inputs, _ppo_step(values, "ptx"), every_process=True
    )


def _ppo_step(values: dict[str, Any], section: str) -> Callable[[Path], dict[str, Any]]:
    def train(out: Path) -> dict[str, Any]:
        ppo.run(build(PPOConfig, {**values, "out": str(out), "resume": True}, section=section))
        rows = read_metrics(out / "metrics.jsonl")
        return {
            "score_first": rows[0]["ppo/score"],
            "score_last": rows[-1]["ppo/score"],
            "kl_last": rows[-1]["ppo/kl"],
        }

    return train


def evaluate_policies(
    loop: Loop, *, sft: StageResult, ppo: StageResult, ptx: StageResult, rm: StageResult
) -> StageResult:
    """Step 8: the policies on the test prompts, judged by held-out labelers; the report."""
    stages = {"sft": sft.path, "rm": rm.path, "ppo": ppo.path, "ppo-ptx": ptx.path}
    values = _eval_values(loop.cfg, stages)

    def judge(out: Path) -> dict[str, Any]:
        evaluate.run(build(EvalConfig, {**values, "out": str(out)}, section="eval"))
        summary = json.loads((out / "summary.json").read_text())
        return {
            "ptx_over_sft": summary["win_rates"].get("ptx", {}).get("heldout", {}).get("win_rate")
        }

    inputs = {
        "sft": sft.key,
        "ppo": ppo.key,
        "ptx": ptx.key,
        "rm": rm.key,
        "test": loop.prompt_keys["test"],
    }
    return loop.runner.stage("eval", values, inputs, judge)


# ----------------------------------------------------------------------------- stage values
# Each stage's values: the paths the pipeline fills in, then the run config's section on top.
# A stage's key hashes these values (without out/resume) and the keys of its inputs.
def _demo_paths(cfg: RunConfig, demos_dir: Path) -> tuple[Path, Path | None]:
    if cfg.feedback == "panel":
        return demos_dir / "train.jsonl", demos_dir / "val.jsonl"
    return Path(cfg.feedback) / "demonstrations.jsonl", None


def _sft_values(cfg: RunConfig, train: Path, val: Path | None) -> dict[str, Any]:
    values = {"model": cfg.model, "data": str(train), "seed": cfg.seed, **cfg.sft}
    if val is not None:
        values.setdefault("val_data", str(val))
    return values


def _rm_values(cfg: RunConfig, init: Path, rankings: Path, demos: Path) -> dict[str, Any]:
    """From the panel's rankings directory (train / val / heldout.jsonl) or the web app's
    export (comparisons.jsonl, and heldout/comparisons.jsonl: accuracy only, never training)."""
    if cfg.feedback == "panel":
        data, val, heldout = (rankings / f"{n}.jsonl" for n in ("train", "val", "heldout"))
    else:
        data, val = rankings / "comparisons.jsonl", None
        heldout = rankings / "heldout" / "comparisons.jsonl"
        heldout = heldout if heldout.is_file() else None
    values = {
        "model": str(init),
        "data": str(data),
        "demos": str(demos),
        "seed": cfg.seed,
        **cfg.rm,
    }
    if val is not None:
        values["val_data"] = str(val)
    if heldout is not None:
        values["heldout_data"] = str(heldout)
    return values


def _ppo_values(cfg: RunConfig, policy: Path, rm: Path, prompts: Path) -> dict[str, Any]:
    """PPO samples like the RM's samples step (length cap, temperature) unless the ppo section
    says otherwise: the RM learned what a cut-off response looks like at that length."""
    return {
        "policy": str(policy),
        "reward": str(rm),
        "seed": cfg.seed,
        "prompts": str(prompts),
        "max_new_tokens": cfg.sampling.max_new_tokens,
        "temperature": cfg.sampling.temperature or 1.0,
        **cfg.ppo,
    }


def _eval_values(cfg: RunConfig, stages: dict[str, Path]) -> dict[str, Any]:
    sft, rm, ppo_, ptx = (stages[s] for s in ("sft", "rm", "ppo", "ppo-ptx"))
    return {
        "policies": f"base:{cfg.model},sft:{sft},ppo:{ppo_},ptx:{ptx}",
        "baseline": "sft",
        "prompts": str(cfg.run_dir / "prompts" / "test.jsonl"),
        "reward": str(rm),
        "runs": f"sft:{sft},rm:{rm},ppo:{ppo_},ptx:{ptx}",
        "seed": cfg.seed,
        **cfg.eval,
    }


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
