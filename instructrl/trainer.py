"""Training machinery: set-up shared by every training stage (accelerator, frozen layers and
LoRA, optimizer, schedule) and the supervised loop of SFT and the RM (`setup`, then `fit`).

accelerate owns devices, mixed precision and distribution (one CPU process by default; DDP,
FSDP or DeepSpeed from an accelerate config via `accelerate launch`). Data order is a pure
function of (seed, epoch), so a resumed run sees the same batches. Run-directory I/O
(metrics, checkpoints, installing models) is in rundir.py, plots in plots.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from instructrl import models
from instructrl.config import SupervisedConfig, TrainConfig
from instructrl.progress import progress_bar
from instructrl.rundir import Checkpointer, MetricsLog, open_trackers

log = logging.getLogger(__name__)


def make_accelerator(cfg: TrainConfig, gradient_accumulation_steps: int = 1) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    device = models.pick_device(cfg.device)
    on_gpu = device.startswith("cuda")
    native_bf16 = on_gpu or (cfg.cpu_bf16 and models.cpu_has_bf16())
    # DeepSpeed runs on CPUs too (its CPU accelerator, gloo), which is how the CPU tests
    # exercise the ZeRO paths; accelerate ignores a DeepSpeed config when told cpu=True, and
    # without a named backend counts one process where DeepSpeed started several. There the
    # accelerate config's precision holds (DeepSpeed casts the weights; bf16 is emulated, slowly,
    # on a CPU without AVX512-BF16 or AMX)
    deepspeed_on_cpu = not on_gpu and launched_with_deepspeed()
    if deepspeed_on_cpu:
        native_bf16 = os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "bf16"
    mixed_precision = "bf16" if cfg.bf16 and native_bf16 else "no"
    _precision_of_this_stage(mixed_precision)
    return Accelerator(
        cpu=not on_gpu and not deepspeed_on_cpu,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if deepspeed_on_cpu else None,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        # our schedules count optimizer steps: one scheduler step per optimizer step, not one
        # per process (accelerate's default, which would run the schedule P times as fast)
        step_scheduler_with_optimizer=False,
    )


def launched_with_deepspeed() -> bool:
    """Whether `accelerate launch` was given a DeepSpeed config."""
    from accelerate.utils import str_to_bool

    return bool(str_to_bool(os.environ.get("ACCELERATE_USE_DEEPSPEED", "false")))


def _precision_of_this_stage(mixed_precision: str) -> None:
    """`instructrl run` runs its stages in one process, and accelerate keeps one AcceleratorState
    per process that refuses another mixed precision: when a stage asks for another one than
    the last (e.g. `sft.cpu_bf16=true` and the RM stage without), drop that state (the process
    group, PartialState, stays) so the next Accelerator is built with this stage's own."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def uses_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(accelerator: Any, *, micro_batch_size: int, grad_clip: float) -> None:
    """Under DeepSpeed, write into its config what it cannot read from us before `prepare`: we
    feed micro-batches ourselves (no DataLoader for accelerate to take their size from), and
    DeepSpeed clips gradients itself (at `gradient_clipping`). A no-op otherwise."""
    if not uses_deepspeed(accelerator):
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = micro_batch_size
    ds["train_batch_size"] = micro_batch_size * accelerator.num_processes
    ds["gradient_accumulation_steps"] = 1  # we mark each step's last backward (sync_gradients)
    ds["gradient_clipping"] = grad_clip  # 0: none (accelerate would fill in 1.0 for "auto")
    if ds.get("zero_optimization", {}).get("stage") == 3:  # we write whole HF model directories
        ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True


def is_sharded(accelerator: Any) -> bool:
    """Whether prepared models hold shards of their parameters (FSDP or DeepSpeed ZeRO-3)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return zero3(accelerator)


def zero3(accelerator: Any) -> bool:
    """Whether this is DeepSpeed ZeRO-3."""
    return uses_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3


def zero3_adopt(accelerator: Any, model: Any) -> Any:
    """Under ZeRO-3, make the parameters that transformers did not create partitioned (the
    reward and value models' scalar head, built after `from_pretrained`) ZeRO parameters too,
    in the dtype of the partitioned ones. accelerate tells transformers about a ZeRO-3 config
    whatever `zero3_init_flag` says, so `from_pretrained` loads every backbone as shards
    (`deepspeed.zero.Init`); DeepSpeed then neither casts nor partitions a module that holds
    some ZeRO parameters, and its optimizer set-up stops on the mixed dtypes. A no-op otherwise."""
    if not zero3(accelerator):
        return model
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import is_zero_param

    params = list(model.parameters())
    dtypes = {p.dtype for p in params if is_zero_param(p)}
    plain = [p for p in params if not is_zero_param(p)]
    if not plain or len(dtypes) != 1:  # none partitioned yet: DeepSpeed's engine does it all
        return model
    dtype = dtypes.pop()
    for p in plain:
        p.data = p.data.to(dtype)
    deepspeed.zero.Init(module=model, config_dict_or_path=_deepspeed_config(accelerator))
    return model


def prepare_frozen(accelerator: Any, model: Any) -> Any:
    """A model that only scores (PPO's reference and reward model), placed as the trained
    models are: under DeepSpeed an inference engine (ZeRO-3: each process holds a shard; other
    stages: a whole copy in DeepSpeed's precision; the pattern TRL and DeepSpeed-Chat use),
    elsewhere the model itself under the prepared models' autocast (autocast_like_prepared)."""
    if not uses_deepspeed(accelerator):
        return autocast_like_prepared(accelerator, model)
    import deepspeed

    config = _deepspeed_config(accelerator)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        zero3_adopt(accelerator, model)
        hidden = getattr(model.config, "hidden_size", None)
        if hidden:  # DeepSpeed's inference settings for a frozen ZeRO-3 model (as in TRL)
            zero["stage3_param_persistence_threshold"] = 10 * hidden
            zero["stage3_prefetch_bucket_size"] = 0
    else:
        zero.clear()
        zero["stage"] = 0
    for key in ("optimizer", "scheduler", "gradient_clipping"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def _deepspeed_config(accelerator: Any) -> dict[str, Any]:
    """A copy of DeepSpeed's config with its batch sizes made numbers ("auto" until a trained
    model is prepared; DeepSpeed refuses "auto" elsewhere)."""
    import copy

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    micro = config.get("train_micro_batch_size_per_gpu")
    micro = micro if isinstance(micro, int) else 1
    config["train_micro_batch_size_per_gpu"] = micro
    config["train_batch_size"] = micro * accelerator.num_processes
    config["gradient_accumulation_steps"] = 1
    return config


def full_state_dict(accelerator: Any, model: Any) -> dict[str, Any]:
    """Every parameter of a prepared model, whole, on every process, with the unwrapped model's
    names: gathered from the shards under FSDP (a collective: every process must call it), the
    model's own state dict otherwise."""
    from accelerate.utils import DistributedType

    if getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        everywhere = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, everywhere):
            return model.state_dict()
    inner = models.unwrap(model)
    if zero3(accelerator):  # every process gathers every shard (a collective)
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(inner.parameters())):
            return {k: v.detach().clone() for k, v in inner.state_dict().items()}
    return inner.state_dict()


def autocast_like_prepared(accelerator: Any, model: Any) -> Any:
    """Run a frozen model's forward under the mixed-precision autocast that `accelerator.prepare`
    gives the trained models (bf16 on GPU), without preparing it: so a PPO reference equal to
    the policy gives equal log-probabilities (KL exactly 0 before any update), and it is not
    saved with the trained models' checkpoints. A no-op without mixed precision."""
    if not getattr(accelerator, "native_amp", False):
        return model
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32, get_mixed_precision_context_manager

    context = get_mixed_precision_context_manager(True, accelerator.autocast_handler)
    model.forward = MethodType(convert_outputs_to_fp32(context(model.forward.__func__)), model)
    return model


def prepare_model(model: Any, cfg: TrainConfig) -> Any:
    """Freeze lower layers, add LoRA adapters, gradient checkpointing; returns the model to train."""
    if cfg.freeze_layers > 0:
        freeze_lower(model, cfg.freeze_layers)
    if cfg.lora.r > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules),
                bias="none",
            ),
        )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model


def freeze_lower(model: Any, n_layers: int) -> None:
    """No gradients (and no optimizer state) for the embeddings and the first n layers.

    The input embedding is frozen too: if it trained, backward would have to run through every
    layer to reach it, and the lever would save nothing. With tied embeddings (SmolLM2) this
    also freezes the unembedding; the top layers and norms adapt.
    """
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None or n_layers > len(layers):
        raise ValueError(
            f"freeze_layers={n_layers}: the model has {0 if layers is None else len(layers)} layers"
        )
    decoder.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n_layers]:
        layer.requires_grad_(False)


def make_optimizer(
    model: Any,
    cfg: TrainConfig,
    lr: float | None = None,
    *,
    groups: list[tuple[Any, float]] | None = None,
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of `model` at `lr` (default cfg.lr), or over
    several `groups` of (module, lr), one parameter group each."""
    groups = groups or [(model, lr or cfg.lr)]
    param_groups = [
        {"params": [p for p in module.parameters() if p.requires_grad], "lr": group_lr}
        for module, group_lr in groups
    ]
    params = [p for g in param_groups for p in g["params"]]
    if not all(g["params"] for g in param_groups):
        raise ValueError("no trainable parameters (check freeze_layers and lora)")
    # torch's fused kernel where it has one (CPU, CUDA), as transformers' Trainer uses: one pass
    # over each tensor instead of foreach's temporaries the size of all trainable parameters
    # (133M fp32 parameters on 2 cores: 1.2 s a step against 2.1 s, 0.5 GB less peak memory);
    # the same update to 1e-6
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(
        param_groups,
        lr=param_groups[0]["lr"],
        betas=(cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    """Linear warmup, then cosine decay to min_lr_ratio of the peak (paper: 10 %)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=max(1, total_steps),
        min_lr_rate=cfg.min_lr_ratio,
    )


class WeightEMA:
    """An exponential moving average of a model's trainable weights (the paper saves the PPO
    policy's EMA, decay 0.992). It has state_dict / load_state_dict, so registered with
    `accelerator.register_for_checkpointing` it is saved and restored with each checkpoint.

    Under DeepSpeed ZeRO-3 each process averages only its own partition of each parameter
    (`param.ds_tensor`), in fp32: no process ever holds a whole copy. state_dict() then gathers
    the partitions (a collective: accelerate calls it on every process) into whole tensors, and
    load_state_dict() takes each process's slice back out of them."""

    def __init__(self, model: Any, decay: float):
        self.decay = decay
        params = self._params(model)
        self.sharded = any(hasattr(p, "ds_tensor") for _, p in params)
        self.shapes = {n: (tuple(p.ds_shape), p.ds_numel) for n, p in params if self.sharded}
        self.shadow = {
            n: (self._data(p).detach().float() if self.sharded else p.detach()).clone()
            for n, p in params
        }

    @staticmethod
    def _params(model: Any) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    @staticmethod
    def _data(p: torch.Tensor) -> torch.Tensor:
        """The weights this process holds: its ZeRO-3 partition (flat, padded) or the whole."""
        return getattr(p, "ds_tensor", p)

    @torch.no_grad()
    def update(self, model: Any) -> None:
        for name, p in self._params(model):
            self.shadow[name].mul_(self.decay).add_(self._data(p).detach(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: Any) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self._data(p).copy_(self.shadow[name])

    def state_dict(self) -> dict[str, Any]:
        if not self.sharded:
            return {"decay": self.decay, "shadow": self.shadow}
        import torch.distributed as dist

        whole = {}
        for name, part in self.shadow.items():
            parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, part)
            shape, numel = self.shapes[name]
            whole[name] = torch.cat(parts)[:numel].view(shape).cpu()
        return {"decay": self.decay, "shadow": whole}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            if self.sharded:  # this process's slice of the flattened, padded whole
                import torch.distributed as dist

                part = self.shadow[name]
                flat = torch.zeros(part.numel() * dist.get_world_size(), dtype=part.dtype)
                flat[: value.numel()] = value.flatten()
                start = dist.get_rank() * part.numel()
                value = flat[start : start + part.numel()]
            self.shadow[name].copy_(value)


def epoch_order(n: int, *, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batches(n: int, *, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(n, seed=seed, epoch=epoch)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class Throughput:
    """Tokens per second over the run so far (for progress bars and metrics)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, tokens: int) -> float:
        self.tokens += tokens
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)


def steps_per_epoch(n_examples: int, cfg_batch: int, grad_accum: int, processes: int) -> int:
    return max(1, math.ceil(n_examples / (cfg_batch * grad_accum * processes)))


@dataclass
class Supervised:
    """A supervised training run (SFT, RM) as `setup` prepares it and `fit` runs it."""

    cfg: SupervisedConfig
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    n_examples: int
    per_epoch: int  # optimizer steps per epoch
    total: int  # optimizer steps in all


@dataclass
class Evaluation:
    """What `fit` runs every cfg.eval_every steps: fn() -> {metric: value}; with select =
    (metric, "min" | "max"), save_best() is called whenever that metric improves."""

    fn: Callable[[], dict[str, float]]
    select: tuple[str, str] | None = None
    save_best: Callable[[], None] | None = None


def setup(accelerator: Any, cfg: SupervisedConfig, model: Any, n_examples: int) -> Supervised:
    """Optimizer, schedule length (epochs or max_steps) and cosine schedule for a model whose
    trainable parameters are chosen (prepare_model), all prepared by accelerate."""
    configure_deepspeed(accelerator, micro_batch_size=cfg.batch_size, grad_clip=cfg.grad_clip)
    zero3_adopt(accelerator, model)
    optimizer = make_optimizer(model, cfg)
    per_epoch = steps_per_epoch(
        n_examples, cfg.batch_size, cfg.grad_accum, accelerator.num_processes
    )
    total = cfg.max_steps or cfg.epochs * per_epoch
    scheduler = make_scheduler(optimizer, cfg, total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return Supervised(cfg, accelerator, model, optimizer, scheduler, n_examples, per_epoch, total)


LossFn = Callable[[list[int]], tuple[Any, dict[str, float], int]]


def fit(
    run: Supervised,
    *,
    prefix: str,
    loss_fn: LossFn,
    evaluation: Evaluation | None = None,
    first_row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The training loop of SFT and RM: resume, micro-batches, clipping, metrics, checkpoints.

    loss_fn(indices) -> (loss, stats, tokens) for one micro-batch of example indices.
    Returns the trainer state ({"step", "best", "best_step"}).
    """
    cfg, out = run.cfg, Path(run.cfg.out)
    checkpoints = Checkpointer(out, cfg.keep_last)
    state, resumed = _resume(run, checkpoints)
    metrics = MetricsLog(
        out / "metrics.jsonl",
        truncate_after_step=state["step"] if resumed else None,
        enabled=run.accelerator.is_main_process,
        trackers=open_trackers(cfg, run.accelerator.is_main_process, prefix),
    )
    if not resumed and first_row:
        metrics.write({"step": 0, **first_row})
    speed = Throughput()
    eval_every = cfg.eval_every or run.per_epoch
    with progress_bar(prefix, total=run.total) as update:
        update(state["step"])
        for step in range(state["step"], run.total):
            sums, tokens = _train_step(run, step, loss_fn)
            done = step + 1
            row = {
                "step": done,
                "epoch": round(done / run.per_epoch, 3),
                **{f"{prefix}/{k}": v for k, v in sums.items() if k != "grad_norm"},
                f"{prefix}/lr": run.scheduler.get_last_lr()[0],
                f"{prefix}/tokens_per_s": speed.add(tokens),
            }
            if "grad_norm" in sums:
                row[f"{prefix}/grad_norm"] = sums["grad_norm"]
            if evaluation is not None and (done % eval_every == 0 or done == run.total):
                row.update({f"{prefix}/{k}": v for k, v in evaluation.fn().items()})
                _select(
                    evaluation,
                    state,
                    row.get(f"{prefix}/{evaluation.select[0]}") if evaluation.select else None,
                    done,
                )
            if (
                done % cfg.log_every == 0
                or done == run.total
                or any("val" in k or "heldout" in k for k in row)
            ):
                metrics.write(row)
            update(
                1, loss=sums.get("loss", float("nan")), tokens_per_s=row[f"{prefix}/tokens_per_s"]
            )
            state["step"] = done
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < run.total:
                checkpoints.save(run.accelerator, state)
    metrics.close()
    return state


def _resume(run: Supervised, checkpoints: Checkpointer) -> tuple[dict[str, Any], bool]:
    """The trainer state from the newest checkpoint when cfg.resume, else a fresh one."""
    latest = checkpoints.latest() if run.cfg.resume else None
    if latest is not None:
        state = checkpoints.load(run.accelerator, latest)
        log.info("resumed from %s (step %d of %d)", latest, state["step"], run.total)
        return state, True
    if run.cfg.resume:
        log.info("resume=true but no checkpoint in %s: starting fresh", checkpoints.root)
    return {"step": 0, "best": None, "best_step": None}, False


def _train_step(run: Supervised, step: int, loss_fn: LossFn) -> tuple[dict[str, float], int]:
    """One optimizer step over this process's micro-batches of the step: (mean stats, tokens).

    Every process runs the same number of backward passes (grad_accum), gradients are
    all-reduced on the last one only (no_sync before), and a process with no micro-batch left in
    an uneven last step runs one of its batches at weight 0: no rank waits for an all-reduce that
    another never starts. Real micro-batches weigh processes / (real ones in the step), so after
    DDP's average the gradient is the mean over the step's micro-batches, as with one process.
    """
    cfg, acc = run.cfg, run.accelerator
    epoch, in_epoch = divmod(step, run.per_epoch)
    batches = micro_batches(run.n_examples, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch)
    slots = step_slots(batches, in_epoch, cfg.grad_accum, acc.process_index, acc.num_processes)
    real = sum(
        len([b for b in step_slots(batches, in_epoch, cfg.grad_accum, p, acc.num_processes) if b])
        for p in range(acc.num_processes)
    )
    sums: dict[str, float] = {}
    tokens, counted = 0, 0
    deepspeed = uses_deepspeed(acc)
    for k, batch in enumerate(slots):
        weight = acc.num_processes / real if batch else 0.0
        sync = k == len(slots) - 1
        if deepspeed:  # its engine accumulates until the backward marked as the boundary,
            acc.sync_gradients = sync  # then clips and steps inside accelerate's backward
        with contextlib.nullcontext() if sync else acc.no_sync(run.model), acc.autocast():
            loss, stats, n_tokens = loss_fn(batch or batches[0])
            acc.backward(loss * weight)
        for name, v in stats.items():
            sums[name] = sums.get(name, 0.0) + (float(v) if batch else 0.0)
        tokens += n_tokens if batch else 0
        counted += bool(batch)
    sums = mean_over_processes(acc, sums, counted)
    if cfg.grad_clip > 0:
        norm = acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        if norm is not None:  # DeepSpeed clips inside its step, and knows the norm after it
            sums["grad_norm"] = float(norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return sums, tokens


def step_slots(
    batches: list[list[int]], step_in_epoch: int, grad_accum: int, process: int, processes: int
) -> list[list[int] | None]:
    """This process's grad_accum micro-batch slots of one step; None where an uneven last step
    has no batch left for it."""
    start = step_in_epoch * grad_accum * processes
    slots = [start + k * processes + process for k in range(grad_accum)]
    return [batches[i] if i < len(batches) else None for i in slots]


def mean_over_processes(acc: Any, sums: dict[str, float], counted: int) -> dict[str, float]:
    """Statistics summed over `counted` items on each process -> their mean over every
    process's items (the same dict on every process; every process must pass the same keys)."""
    names = sorted(sums)
    totals = torch.tensor([*(sums[n] for n in names), float(counted)], dtype=torch.float64)
    if acc.num_processes > 1:
        totals = acc.reduce(totals.to(acc.device), reduction="sum").cpu()
    return {n: float(totals[i] / max(totals[-1], 1.0)) for i, n in enumerate(names)}


def _select(evaluation: Evaluation, state: dict[str, Any], value: float | None, step: int) -> None:
    """Keep the best evaluation so far (state best / best_step) and save its model."""
    if value is None or evaluation.select is None or evaluation.save_best is None:
        return
    lower = evaluation.select[1] == "min"
    if state["best"] is None or (value < state["best"] if lower else value > state["best"]):
        state.update(best=value, best_step=step)
        evaluation.save_best()
