"""One dataclass per stage; YAML files plus `key=value` overrides via OmegaConf structured configs.

Defaults are the CPU preset. Where the paper (Ouyang et al. 2022, appendix C) gives a value and
the CPU preset differs, the paper's value is in the field's comment and help. Derived values are
properties; cross-field checks live in `__post_init__` and name both fields.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from instructrl.errors import ConfigError

T = TypeVar("T")


def _f(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with a help text shown by `instructrl <stage> --help`."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class SamplingConfig:
    """How a policy samples responses (rollouts, K samples per prompt, evaluation)."""

    max_new_tokens: int = _f(64, "response length cap in tokens (paper: 1k; CPU preset 64)")
    temperature: float = _f(1.0, "sampling temperature; 0 = greedy (paper rollouts: 1.0)")
    top_p: float = _f(1.0, "nucleus sampling mass (1.0 = off)")
    top_k: int = _f(0, "top-k sampling (0 = off)")
    stop: list[str] = _f([], "stop strings: the response is cut before the first one")
    batch_size: int = _f(8, "prompts per generate call")
    seed: int = _f(0, "random seed; batch i uses seed + i")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(
                f"config: sampling.max_new_tokens: expected >= 1, got {self.max_new_tokens}"
            )
        if self.temperature < 0:
            raise ConfigError(
                f"config: sampling.temperature: expected >= 0, got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(
                f"config: sampling.top_p: expected a value in (0, 1], got {self.top_p}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"config: sampling.batch_size: expected >= 1, got {self.batch_size}")


ENGINES = ("hf",)
QUANTIZE = ("none", "auto", "bf16", "int8")


@dataclass
class RolloutConfig:
    """Which engine samples responses (generate, the samples step, PPO, evaluation)."""

    engine: str = _f("hf", "rollout engine: hf (transformers generate)")
    quantize: str = _f(
        "none",
        "none (sample with the policy itself), auto (bf16 on a CPU that multiplies bfloat16 "
        "natively, none elsewhere), bf16 (a bfloat16 copy: about 2x tokens/s on CPUs "
        "with AVX512-BF16 or AMX, ~0.04 nats/token from fp32 on SmolLM2) or int8 (a dynamically "
        "int8-quantised copy, CPU: about 2x, but ~1.7 nats/token off on SmolLM2); with a copy, PPO "
        "recomputes the logprobs with the training model",
    )
    share_prefill: bool = _f(
        True, "K samples of one prompt share one prefill (the prompt is encoded once, not K times)"
    )
    tis_cap: float = _f(
        0.0,
        "PPO: truncated importance sampling, cap on pi_old / pi_engine per token (verl, TRL: 2); "
        "0 = off",
    )

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(
                f"config: rollout.engine: expected one of {', '.join(ENGINES)}, got {self.engine!r}"
            )
        if self.quantize not in QUANTIZE:
            raise ConfigError(
                f"config: rollout.quantize: expected one of {', '.join(QUANTIZE)}, got {self.quantize!r}"
            )
        if self.tis_cap < 0:
            raise ConfigError(f"config: rollout.tis_cap: expected >= 0, got {self.tis_cap}")


@dataclass
class GenerateConfig:
    """`instructrl generate`: sample completions from a policy, written as sample records."""

    model: str = _f(
        "default",
        "policy: 'default' (embedded SmolLM2-135M-Instruct), an HF directory, or a cached hub id",
    )
    prompt: str | None = _f(None, "one prompt text (or use prompts=FILE)")
    prompts: str | None = _f(None, "prompt records JSONL (or use prompt=TEXT)")
    limit: int = _f(0, "use only the first N prompts of the file (0 = all)")
    samples: int = _f(1, "samples per prompt (the RM stage uses K = 4..9)")
    out: str | None = _f(None, "write sample records here (JSONL); default: print to stdout")
    show: int = _f(3, "with out=FILE, also show the first N prompt/response pairs on stderr")
    max_prompt_tokens: int = _f(
        512, "prompts longer than this are dropped, with a count (paper: 1k)"
    )
    chat_template: bool = _f(True, "apply the tokenizer's chat template to each prompt")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N")
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9),
        metadata={"help": "sampling settings (generate's default: temperature 0.7, top_p 0.9)"},
    )
    rollout: RolloutConfig = field(
        default_factory=RolloutConfig, metadata={"help": "rollout engine settings"}
    )

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.prompts is None):
            raise ConfigError(
                f"config: prompt and prompts: expected exactly one of them, got "
                f"prompt={self.prompt!r}, prompts={self.prompts!r}"
            )
        if not 1 <= self.samples <= 64:
            raise ConfigError(
                f"config: samples: expected 1..64 samples per prompt, got {self.samples}"
            )


@dataclass
class LabelConfig:
    """`instructrl label`: the simulated panel writes demonstrations, rankings or ratings."""

    panel: str = _f(
        "train", "labeler group: train (makes training data) or heldout (evaluation only)"
    )
    task: str = _f("rank", "demonstrate (prompt records in), rank or rate (sample records in)")
    input: str | None = _f(
        None, "input JSONL; demonstrate defaults to the shipped prompts of `split`"
    )
    split: str = _f("train", "with task=demonstrate and no input: which shipped split to use")
    limit: int = _f(0, "use only the first N input prompts (0 = all)")
    prompts: str | None = _f(
        None, "prompt records with references/constraints for rank/rate (default: shipped)"
    )
    out: str | None = _f(None, "output JSONL (demonstration / comparison / rating records)")
    labelers_per_item: int = _f(1, "how many labelers rank each prompt's K responses")
    seed: int = _f(0, "panel seed: labelers' weights, noise and ranking samples")

    def __post_init__(self) -> None:
        if self.panel not in ("train", "heldout"):
            raise ConfigError(f"config: panel: expected train or heldout, got {self.panel!r}")
        if self.task not in ("demonstrate", "rank", "rate"):
            raise ConfigError(
                f"config: task: expected demonstrate, rank or rate, got {self.task!r}"
            )
        if self.task != "demonstrate" and self.input is None:
            raise ConfigError(
                f"config: input: task={self.task} needs input=SAMPLES.jsonl (sample records, K per prompt)"
            )
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"config: split: expected train, val or test, got {self.split!r}")
        if not 1 <= self.labelers_per_item <= 10:
            raise ConfigError(
                f"config: labelers_per_item: expected 1..10, got {self.labelers_per_item}"
            )


@dataclass
class LoraSettings:
    """LoRA through peft; r = 0 trains every weight."""

    r: int = _f(0, "LoRA rank; 0 = full fine-tuning")
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "modules that get adapters",
    )
    merge: bool = _f(
        True,
        "save the adapter merged into the weights, so the output is a plain HF model (reward "
        "and value models are always merged)",
    )


# report_to= names (accelerate's tracker classes) and the packages each needs (any one of them)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "trackio": ("trackio",),
}


def check_report_to(report_to: list[str]) -> None:
    unknown = [t for t in report_to if t not in TRACKERS]
    if unknown:
        raise ConfigError(
            f"config: report_to: expected some of {', '.join(TRACKERS)}, got {', '.join(unknown)}"
        )


@dataclass
class TrainConfig:
    """What every training stage shares: optimiser, schedule, devices, checkpoints."""

    lr: float = _f(1e-5, "peak learning rate")
    beta1: float = _f(0.9, "Adam beta1 (paper: 0.9)")
    beta2: float = _f(0.95, "Adam beta2 (paper: 0.95)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_steps: int = _f(0, "linear warmup steps (paper SFT / RM: none)")
    min_lr_ratio: float = _f(0.1, "cosine decay to this fraction of the peak (paper: 10 %)")
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0 = off)")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    freeze_layers: int = _f(
        0, "freeze the embeddings and the first N transformer layers (CPU lever)"
    )
    gradient_checkpointing: bool = _f(
        False, "recompute activations in backward (less memory, ~30 % slower)"
    )
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA settings"})
    seed: int = _f(0, "seed for init, data order and dropout")
    device: str = _f("auto", "auto, cpu, cuda (multi-GPU: launch with accelerate launch)")
    bf16: bool = _f(
        True,
        "bf16 autocast on GPU (on CPU only with cpu_bf16; rollout.quantize=bf16 samples from a "
        "bf16 copy either way)",
    )
    cpu_bf16: bool = _f(
        False,
        "with bf16: autocast on a CPU that multiplies bfloat16 natively (AVX512-BF16 or AMX) "
        "too; weights, gradients and optimizer state stay fp32. Ignored on other CPUs (emulated "
        "bf16 is slower than fp32)",
    )
    checkpoint_every: int = _f(50, "optimizer steps between checkpoints (0 = only at the end)")
    keep_last: int = _f(1, "checkpoints kept")
    resume: bool = _f(False, "continue from the last checkpoint in out/checkpoints")
    log_every: int = _f(1, "optimizer steps between metrics rows")
    report_to: list[str] = _f(
        [],
        "experiment trackers that get the metrics.jsonl rows too: tensorboard, wandb (offline), "
        "mlflow (a local folder), trackio; files under OUT/tracking/",
    )

    def _check_train(self, stage: str) -> None:
        check_report_to(self.report_to)
        if self.lr <= 0:
            raise ConfigError(f"config: lr: expected > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"config: min_lr_ratio: expected 0..1, got {self.min_lr_ratio}")
        if self.grad_accum < 1:
            raise ConfigError(f"config: grad_accum: expected >= 1, got {self.grad_accum}")
        if self.lora.r < 0:
            raise ConfigError(f"config: lora.r: expected >= 0, got {self.lora.r}")
        if self.keep_last < 1:
            raise ConfigError(f"config: keep_last: expected >= 1, got {self.keep_last}")


@dataclass
class SupervisedConfig(TrainConfig):
    """What SFT and the RM share: a records file, its validation split, epochs of micro-batches
    (trainer.setup and trainer.fit read these)."""

    RECORDS: ClassVar[str] = "records"

    model: str = _f("default", "initial model: 'default', an HF directory, or a cached hub id")
    data: str | None = _f(None, "training records JSONL (required)")
    val_data: str | None = _f(None, "validation records; default: val_fraction of data")
    val_fraction: float = _f(0.1, "share held out for validation when val_data is not given")
    out: str = _f("runs/out", "output directory")
    epochs: int = _f(1, "passes over the data")
    max_steps: int = _f(0, "stop after this many optimizer steps (0 = epochs decide)")
    batch_size: int = _f(8, "examples per micro-batch")
    max_length: int = _f(256, "prompt + response tokens (paper: 1k prompt + 1k response)")
    eval_every: int = _f(0, "optimizer steps between validations (0 = once per epoch)")

    def __post_init__(self) -> None:
        self._check_train("train")
        if self.data is None:
            raise ConfigError(
                f"config: data: expected a {self.RECORDS} JSONL file (data=FILE), got nothing"
            )
        if self.epochs < 1 and self.max_steps < 1:
            raise ConfigError(
                f"config: epochs and max_steps: one must be >= 1, got epochs={self.epochs}, "
                f"max_steps={self.max_steps}"
            )
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"config: val_fraction: expected 0 <= x < 1, got {self.val_fraction}")


@dataclass
class SFTConfig(SupervisedConfig):
    """`instructrl sft`: supervised fine-tuning on demonstrations (paper, appendix C.1)."""

    RECORDS: ClassVar[str] = "demonstrations"

    model: str = _f("default", "base model: 'default', an HF directory, or a cached hub id")
    data: str | None = _f(None, "demonstration records JSONL (required)")
    val_data: str | None = _f(None, "validation demonstrations; default: val_fraction of data")
    val_fraction: float = _f(
        0.1, "share of data held out for validation when val_data is not given"
    )
    out: str = _f("runs/sft", "output directory (HF model, metrics.jsonl, loss.png, checkpoints/)")
    epochs: int = _f(2, "passes over the data (paper: 16)")
    batch_size: int = _f(8, "examples per micro-batch (paper: 32)")
    lr: float = _f(2e-5, "peak learning rate (paper: 9.65e-6 at batch 32 for 1.3B / 6B)")
    dropout: float = _f(
        0.0, "attention dropout while training (paper: residual dropout 0.2; Llama has none)"
    )
    ptx_fraction: float = _f(
        0.0, "mix in pretraining text, as a share of demonstrations (paper's PPO init: 0.1)"
    )
    reward: str | None = _f(
        None, "reward model: select the checkpoint by its mean score on validation prompts (paper)"
    )
    rm_eval_prompts: int = _f(
        16, "with reward=DIR: validation prompts generated (greedy) and scored per evaluation"
    )
    rm_eval_tokens: int = _f(64, "with reward=DIR: new tokens per generated validation response")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 16:
            raise ConfigError(f"config: max_length: expected >= 16, got {self.max_length}")


@dataclass
class RMConfig(SupervisedConfig):
    """`instructrl rm`: reward model on K-way rankings (paper, section 3.5 and C.2)."""

    RECORDS: ClassVar[str] = "comparisons"

    model: str = _f("default", "initial backbone, usually the SFT model (paper: 6B SFT model)")
    data: str | None = _f(None, "comparison records JSONL from training labelers (required)")
    val_data: str | None = _f(
        None, "validation comparisons (training labelers); default: val_fraction of data"
    )
    heldout_data: str | None = _f(None, "comparisons from held-out labelers, for accuracy only")
    demos: str | None = _f(None, "demonstrations: the bias is set so that they score 0 on average")
    val_fraction: float = _f(
        0.1, "share of prompts held out for validation when val_data is not given"
    )
    out: str = _f("runs/rm", "output directory (reward model, metrics.jsonl, accuracy.png)")
    epochs: int = _f(1, "passes over the comparisons (paper: 1; more overfits)")
    batch_size: int = _f(
        4, "prompts per micro-batch, all K completions of each (paper: 64 prompts)"
    )
    max_length: int = _f(256, "prompt + response tokens per completion")
    lr: float = _f(2e-5, "peak learning rate (paper: 9e-6, cosine to 10 %)")
    head_only: bool = _f(
        False,
        "train only the scalar head, on the frozen backbone's last-token features computed once "
        "(many full-batch epochs in seconds; the CPU preset's choice at a few hundred prompts)",
    )
    head_epochs: int = _f(300, "with head_only: full-batch Adam steps")
    head_lr: float = _f(1e-2, "with head_only: learning rate of the head")
    head_weight_decay: float = _f(
        0.1, "with head_only: L2 penalty on the head's weights over standardised features"
    )
    quantize: str = _f(
        "none",
        "with head_only: the frozen backbone in none (fp32), bf16 or auto (bf16 on a CPU that "
        "multiplies bfloat16 natively, none elsewhere; about 2x faster features); the reward "
        "model is saved in that precision and scored in it everywhere (PPO, eval, score), so "
        "it scores exactly the features its head learned from",
    )
    pooling: str = _f(
        "last",
        "what the head reads: last (the final hidden state at the response's last token, the "
        "paper's and the standard form's) or mean (the mean of the final hidden states over the "
        "response tokens, recorded as instructrl.pooling in config.json)",
    )

    layers: int = _f(
        0,
        "keep the backbone's first N decoder layers (0: all): the head reads layer N's hidden "
        "states (after the final norm) and the saved reward model is that shorter standard "
        "model, cheaper to score; PPO's value model, initialised from it, keeps them too",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers < 0:
            raise ConfigError(f"config: rm.layers: expected 0 (all) or more, got {self.layers}")
        if self.pooling not in ("last", "mean"):
            raise ConfigError(f"config: rm.pooling: expected last or mean, got {self.pooling!r}")
        if self.quantize not in ("none", "auto", "bf16"):
            raise ConfigError(
                f"config: rm.quantize: expected one of none, auto, bf16, got {self.quantize!r}"
            )
        if self.quantize == "bf16" and not self.head_only:
            raise ConfigError(
                "config: rm.quantize=bf16 needs rm.head_only=true (a fine-tuned backbone trains "
                "in fp32); use rm.quantize=none or auto"
            )


@dataclass
class ScoreConfig:
    """`instructrl score`: add a `reward` field to sample or demonstration records."""

    reward: str | None = _f(None, "reward model directory (from instructrl rm)")
    data: str | None = _f(None, "sample or demonstration records JSONL")
    out: str | None = _f(None, "output JSONL (the input records with `reward` added)")
    batch_size: int = _f(8, "completions per forward pass")
    max_length: int = _f(0, "prompt + response tokens; longer responses are cut (0 = the RM's own)")
    device: str = _f("auto", "auto, cpu, cuda")

    def __post_init__(self) -> None:
        for key in ("reward", "data", "out"):
            if getattr(self, key) is None:
                raise ConfigError(f"config: {key}: required ({key}=...)")


@dataclass
class ImportConfig:
    """`instructrl import FORMAT SOURCE`: our records from a Hugging Face `datasets` folder,
    Parquet or JSON file, a Label Studio JSON export, or an Argilla 2.x export."""

    format: str | None = _f(None, "datasets, labelstudio or argilla")
    source: str | None = _f(None, "the file or folder to read")
    out: str | None = _f(None, "output JSONL (skipped rows, if any, listed in OUT.skipped.txt)")
    kind: str = _f(
        "auto",
        "the records to write when a source holds several kinds: comparison, demonstration or rating",
    )
    shape: str = _f(
        "auto",
        "datasets: pairs (prompt/chosen/rejected), hh (whole conversations in chosen/rejected), "
        "ultrafeedback (prompt + completions with ratings), completion (prompt/completion), "
        "messages; auto picks by the columns",
    )
    split: str | None = _f(None, "datasets: the split of a DatasetDict (default train)")
    columns: dict[str, str] = _f(
        {},
        "our name -> the source's (prompt, chosen, rejected, completion, messages, completions, "
        "response, rating, labeler, id, items, left, right), e.g. columns.prompt=question",
    )
    rating_key: str = _f(
        "overall_score", "ultrafeedback: the rating of each completion (higher is better)"
    )
    buckets: list[str] = _f([], "labelstudio: Ranker bucket names, best first")
    options: dict[str, str] = _f(
        {}, "argilla: ranking option value -> the field holding its text (default: the same name)"
    )
    labeler: str | None = _f(None, "datasets: labeler name for rows without one")

    def __post_init__(self) -> None:
        for key in ("format", "source", "out"):
            if getattr(self, key) is None:
                raise ConfigError(f"config: {key}: required ({key}=...)")
        if self.kind not in ("auto", "comparison", "demonstration", "rating"):
            raise ConfigError(
                f"config: kind: expected auto, comparison, demonstration or rating, got {self.kind!r}"
            )


@dataclass
class PPOConfig(TrainConfig):
    """`instructrl ppo`: PPO(-ptx) against the reward model (paper, section 3.5, C.3, C.4)."""

    policy: str = _f("runs/sft", "initial policy and KL reference: the SFT model")
    reward: str = _f("runs/rm", "reward model directory (instructrl rm)")
    value: str | None = _f(None, "value model init; default: the reward model (paper)")
    prompts: str = _f("default", "prompt records JSONL, or 'default' (shipped prompts of `split`)")
    split: str = _f("train", "with prompts=default: which shipped split")
    ptx: str = _f(
        "default",
        "pretraining text for PPO-ptx: 'default' (shipped held-out prose), a JSONL of {text}, or 'none'",
    )
    out: str = _f(
        "runs/ppo", "output directory (policy HF model, value/, metrics.jsonl, samples.jsonl)"
    )
    iterations: int = _f(30, "PPO iterations (paper: 256k episodes / 512 = 500)")
    batch_size: int = _f(8, "episodes (prompts) per iteration (paper: 512)")
    minibatch_size: int = _f(8, "episodes per gradient step (paper: 64)")
    ppo_epochs: int = _f(1, "passes over each rollout batch (paper: 1)")
    lr: float = _f(1e-5, "policy learning rate, constant after warmup")
    value_lr: float = _f(1e-5, "value learning rate (paper: 9e-6)")
    warmup_iterations: int = _f(10, "linear warmup from 0.1x the lr (paper: 10 iterations)")
    kl_coef: float = _f(0.02, "beta: per-token KL penalty to the SFT policy (paper: 0.02)")
    kl_estimator: str = _f(
        "k1",
        "per-token KL penalty: k1 = log pi - log pi_ref (paper), k2 = half its square, "
        "k3 = exp(-k1) - 1 + k1 (verl / OpenRLHF 'low_var_kl')",
    )
    adaptive_kl: bool = _f(False, "adapt beta toward kl_target (lm-human-preferences)")
    kl_target: float = _f(6.0, "with adaptive_kl: target KL (nats per response)")
    kl_horizon: int = _f(10000, "with adaptive_kl: horizon in episodes")
    gamma: float = _f(1.0, "GAE discount (paper: no discount)")
    lam: float = _f(0.95, "GAE lambda")
    clip: float = _f(0.2, "policy ratio clip (paper: 0.2)")
    value_clip: float = _f(0.2, "value clip around the rollout's values")
    whiten_rewards: bool = _f(False, "whiten per-token rewards over the batch before GAE")
    whiten_advantages: bool = _f(True, "whiten advantages over the batch")
    temperature: float = _f(
        1.0, "rollout temperature, applied to logits in sampling and scoring (paper: 1)"
    )
    max_new_tokens: int = _f(48, "response length cap (paper: 1k; CPU preset 48)")
    max_prompt_tokens: int = _f(256, "longer prompts are dropped, with a count (paper: 1k)")
    missing_eos_penalty: float | None = _f(
        None, "score for a response that never ends (lm-human-preferences: -1); null = off"
    )
    stop: list[str] = _f(
        [], "stop strings: the response is truncated at the first one (and counts as ended)"
    )
    ptx_coef: float = _f(
        1.0,
        "gamma: weight of the pretraining NLL (paper: 27.8 with 8x pretraining examples; CPU preset 1.0)",
    )
    ptx_batch_size: int = _f(8, "pretraining chunks per gradient step")
    ptx_length: int = _f(64, "tokens per pretraining chunk")
    ema_decay: float = _f(0.0, "policy weight EMA saved as the output (paper: 0.992); 0 = off")
    sample_every: int = _f(5, "write sample completions every N iterations (0 = never)")
    rollout: RolloutConfig = field(
        default_factory=RolloutConfig, metadata={"help": "rollout engine settings"}
    )
    reuse_rollout_logprobs: bool = _f(
        True, "take old logprobs from the sampler's logits instead of a second forward pass"
    )
    share_trunk: bool = _f(
        True,
        "policy, reference and value model keep one copy of their equal frozen bottom "
        "freeze_layers layers and run them once per rollout batch",
    )

    def __post_init__(self) -> None:
        self._check_train("ppo")
        if self.minibatch_size > self.batch_size or self.batch_size % self.minibatch_size:
            raise ConfigError(
                f"config: batch_size and minibatch_size: expected minibatch_size to divide batch_size, got "
                f"batch_size={self.batch_size}, minibatch_size={self.minibatch_size}"
            )
        if self.temperature <= 0:
            raise ConfigError(
                f"config: temperature: expected > 0 for PPO rollouts, got {self.temperature}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"config: ema_decay: expected 0 <= x < 1, got {self.ema_decay}")
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"config: split: expected train, val or test, got {self.split!r}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ConfigError(
                f"config: kl_estimator: expected k1, k2 or k3, got {self.kl_estimator!r}"
            )


@dataclass
class EvalConfig:
    """`instructrl eval`: the paper's section 4 on our policies, as summary.json and report.html."""

    policies: str = _f(
        "base:default",
        "NAME:MODEL pairs, comma-separated (e.g. base:default,sft:runs/sft,ppo:runs/ppo)",
    )
    baseline: str = _f(
        "", "the policy every other is compared with (paper: SFT 175B); default: the first"
    )
    prompts: str = _f("test", "a shipped split (train, val, test) or a prompt records JSONL")
    adversarial: bool = _f(
        True, "also generate on the shipped adversarial prompts (harmlessness, false premises)"
    )
    limit: int = _f(0, "use only the first N prompts (0 = all)")
    adversarial_limit: int = _f(0, "use only the first N adversarial prompts (0 = all 129)")
    samples_per_prompt: int = _f(
        1,
        "responses per prompt and policy, each judged against the baseline's response of the "
        "same draw by its own labeler (CIs resample prompts): more comparisons for the "
        "generation cost, as the paper's labelers compared several outputs per prompt",
    )
    reward: str | None = _f(None, "reward model directory: adds the mean RM score per policy")
    human: str | None = _f(
        None,
        "comparisons ranked by people (the web app's heldout/comparisons.jsonl, after ranking "
        "these generations): adds their win rates against the baseline as panel 'human'",
    )
    human_ratings: str | None = _f(
        None,
        "ratings by people (the web app's heldout/ratings.jsonl; each names its policy in "
        "`model`): adds their Likert and Figure-4 flag rates per policy beside the panel's",
    )
    runs: str = _f(
        "", "NAME:DIR pairs of stage directories whose metrics.jsonl curves go into the report"
    )
    out: str = _f("runs/eval", "output directory (report.html, summary.json, generations/)")
    agreement: bool = _f(True, "report the panel's agreement on the shipped calibration samples")
    best_of: int = _f(
        4,
        "diagnostic: K samples of the baseline per prompt, the best by the RM and by the held-out "
        "panel itself judged against the baseline's sample (needs reward=; 0 = off)",
    )
    best_of_prompts: int = _f(
        0, "best_of on the first N test prompts only (0 = all): a diagnostic's CI, at 1/N the cost"
    )
    ppl_chunks: int = _f(32, "held-out text chunks for perplexity (the alignment tax)")
    ppl_length: int = _f(128, "tokens per held-out chunk")
    seed: int = _f(0, "seed for sampling, panels and bootstrap")
    device: str = _f("auto", "auto, cpu, cuda")
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9, batch_size=16),
        metadata={"help": "sampling settings, the same for every policy"},
    )
    rollout: RolloutConfig = field(
        default_factory=RolloutConfig, metadata={"help": "rollout engine settings"}
    )
    report_to: list[str] = _f(
        [],
        "experiment trackers that get summary.json's figures (step 0): tensorboard, wandb "
        "(offline), mlflow, trackio; files under OUT/tracking/",
    )

    def __post_init__(self) -> None:
        check_report_to(self.report_to)
        pairs = self.policy_pairs
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise ConfigError(f"config: policies: expected distinct names, got {names}")
        if self.baseline and self.baseline not in names:
            raise ConfigError(
                f"config: baseline: expected one of the policies ({', '.join(names)}), got {self.baseline!r}"
            )
        if self.best_of_prompts < 0:
            raise ConfigError(
                f"config: best_of_prompts: expected 0 (all) or N >= 1, got {self.best_of_prompts}"
            )
        if self.best_of == 1 or self.best_of < 0:
            raise ConfigError(f"config: best_of: expected 0 (off) or K >= 2, got {self.best_of}")
        if self.samples_per_prompt < 1:
            raise ConfigError(
                f"config: samples_per_prompt: expected N >= 1, got {self.samples_per_prompt}"
            )

    @property
    def policy_pairs(self) -> list[tuple[str, str]]:
        return _pairs(self.policies, "policies")

    @property
    def run_pairs(self) -> list[tuple[str, str]]:
        return _pairs(self.runs, "runs") if self.runs else []

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.policy_pairs[0][0]


def _pairs(text: str, key: str) -> list[tuple[str, str]]:
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, sep, path = item.partition(":")
        if not sep or not name or not path:
            raise ConfigError(
                f"config: {key}: expected NAME:PATH items separated by commas, got {item!r}"
            )
        out.append((name, path))
    if not out:
        raise ConfigError(f"config: {key}: expected at least one NAME:PATH item, got {text!r}")
    return out


@dataclass
class RunConfig:
    """`instructrl run`: the whole loop on one config, resumable stage by stage.

    Stage sections (sft, rm, ppo, ptx, eval) hold overrides of that stage's own config; the
    pipeline fills in data and output paths. `ptx` applies on top of `ppo` for PPO-ptx.
    """

    name: str = _f("default", "run name: outputs go to <root>/<name>/<stage>/")
    root: str = _f("runs", "directory for all runs")
    model: str = _f(
        "default", "pretrained base model: 'default', an HF directory, or a cached hub id"
    )
    feedback: str = _f(
        "panel",
        "'panel' (simulated labelers) or a directory with the web app's demonstrations.jsonl and comparisons.jsonl",
    )
    prompts: str = _f(
        "default", "'default' (shipped prompts, by split) or a prompt records JSONL with splits"
    )
    sft_prompts: int = _f(128, "training prompts with demonstrations for SFT (paper: 13k)")
    rm_prompts: int = _f(96, "training prompts with K ranked samples for the RM (paper: 33k)")
    ppo_prompts: int = _f(0, "training prompts for PPO (0 = all the rest; paper: 31k)")
    val_prompts: int = _f(
        24, "validation prompts (SFT selection, RM accuracy for both labeler groups)"
    )
    eval_prompts: int = _f(64, "test prompts for the evaluation (0 = the whole test split)")
    k: int = _f(4, "samples ranked per prompt (paper: 4 to 9)")
    rounds: int = _f(
        1,
        "feedback rounds: after PPO, rank samples of the new policy, retrain the RM, continue PPO",
    )
    seed: int = _f(0, "seed for prompt partitions, panels and every stage")
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=1.0, max_new_tokens=48, batch_size=16),
        metadata={"help": "how the K samples for ranking are drawn (paper: temperature 1)"},
    )
    rollout: RolloutConfig = field(
        default_factory=RolloutConfig, metadata={"help": "rollout engine for the K samples"}
    )
    sft: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides for the sft stage"}
    )
    rm: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides for the rm stage"}
    )
    ppo: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides for both PPO runs"}
    )
    ptx: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides for PPO-ptx only (on top of ppo)"}
    )
    eval: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides for the eval stage"}
    )

    def __post_init__(self) -> None:
        if not 2 <= self.k <= 9:
            raise ConfigError(f"config: k: expected 2..9 samples per prompt, got {self.k}")
        if self.rounds < 1:
            raise ConfigError(f"config: rounds: expected >= 1, got {self.rounds}")
        for key in ("sft_prompts", "rm_prompts", "val_prompts"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config: {key}: expected >= 1, got {getattr(self, key)}")

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / self.name


def build(cls: type[T], values: dict[str, Any], *, section: str | None = None) -> T:
    """A stage config from a dict of (possibly nested) values, type-checked like the CLI's;
    with `section` (a run config's stage section), error messages name keys by their path
    there (`ppo.lr`)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(values))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _config_error(cls, e, f"{section}." if section else "") from None
    except ConfigError as e:
        if section:  # a cross-field check in __post_init__: say which section it came from
            raise ConfigError(str(e).replace("config: ", f"config: {section}: ", 1)) from None
        raise


def _config_error(cls: type, e: OmegaConfBaseException, where: str = "") -> ConfigError:
    """An OmegaConf error as a one-line ConfigError naming the key (with its section prefix)."""
    if isinstance(e, ConfigKeyError):
        stage = cls.__name__.removesuffix("Config").lower()
        valid = ", ".join(key for key, *_ in fields_of(cls))
        return ConfigError(
            f"config: unknown key '{where}{e.full_key}' for {stage}; valid keys: {valid}"
        )
    if isinstance(e, ValidationError):
        hints = {key: tname for key, tname, *_ in fields_of(cls)}
        return ConfigError(
            f"config: {where}{e.full_key}: expected {hints.get(str(e.full_key), 'another type')}, "
            f"got {e.value!r}"
        )
    return ConfigError(f"config: {where}{str(e).splitlines()[0]}")


DEFAULT_DB_URL = "sqlite:///feedback.db"
DB_URL_HELP = "database URL: sqlite:///FILE, or postgresql+psycopg://USER:PASSWORD@HOST/DB"


@dataclass
class ServeConfig:
    """`instructrl serve`: the feedback web app (FastAPI under uvicorn)."""

    db: str = _f(DEFAULT_DB_URL, DB_URL_HELP)
    host: str = _f("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = _f(8000, "port to listen on")
    secret_key: str | None = _f(
        None,
        "signs session cookies (32+ random characters); default: a key kept in FILE.secret "
        "beside a SQLite database, or web.secret in the cache directory",
    )
    secure_cookies: bool = _f(False, "mark cookies Secure (serve behind HTTPS)")
    jobs_dir: str = _f("runs/web-jobs", "where generation jobs write their prompts and samples")
    python: str = _f("", "Python interpreter for generation jobs (default: the one serving)")
    check_schema: bool = _f(
        True, "refuse to start on a database whose schema is older than the code (db upgrade)"
    )
    claim_minutes: float = _f(
        30.0,
        "an item a labeler opened and left this long without activity goes back to the queue "
        "(0 = never)",
    )

    def __post_init__(self) -> None:
        if self.claim_minutes < 0:
            raise ConfigError(f"config: claim_minutes: expected >= 0, got {self.claim_minutes}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"config: port: expected 1-65535, got {self.port}")
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise ConfigError(
                "serve: secret_key: expected at least 32 random characters (default: a key kept "
                "beside the database), got a shorter one"
            )


@dataclass
class DBConfig:
    """`instructrl db upgrade|export`, `instructrl users add`: the feedback database."""

    db: str = _f(DEFAULT_DB_URL, DB_URL_HELP)
    project: str | None = _f(None, "db export: the project's name")
    out: str | None = _f(
        None,
        "db export: directory for demonstrations.jsonl, comparisons.jsonl, ratings.jsonl and "
        "prompts.jsonl (what `instructrl run feedback=DIR` reads), and preference_pairs.jsonl "
        "(every untied pair of the comparisons, TRL's prompt/chosen/rejected)",
    )
    format: str = _f(
        "jsonl",
        "db export: also write each file as a `datasets` folder (datasets) or a Parquet file "
        "(parquet) beside the JSONL",
    )
    base_url: str = _f(
        "http://127.0.0.1:8000",
        "users add --invite: the address labelers reach the app at (as `serve` listens, or the "
        "public URL behind a proxy), for the printed invite link",
    )

    def __post_init__(self) -> None:
        if self.format not in ("jsonl", "datasets", "parquet"):
            raise ConfigError(
                f"config: format: expected jsonl, datasets or parquet, got {self.format!r}"
            )


STAGE_CONFIGS: dict[str, type] = {
    "generate": GenerateConfig,
    "label": LabelConfig,
    "sft": SFTConfig,
    "rm": RMConfig,
    "score": ScoreConfig,
    "ppo": PPOConfig,
    "eval": EvalConfig,
    "run": RunConfig,
    "serve": ServeConfig,
    "db": DBConfig,
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " (or null)"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def fields_of(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type name, default, help) for every leaf field, nested configs flattened."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(fields_of(tp, f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((prefix + f.name, _type_name(tp), default, f.metadata.get("help", "")))
    # defaults of a nested dataclass built by a factory override the class's own defaults
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]) and f.default_factory is not dataclasses.MISSING:
            inst = f.default_factory()
            for i, (key, tname, _, hlp) in enumerate(rows):
                if key.startswith(f"{prefix}{f.name}."):
                    rows[i] = (key, tname, getattr(inst, key.rsplit(".", 1)[1]), hlp)
    return rows


def _split_args(args: list[str]) -> tuple[list[Path], list[str]]:
    files, overrides = [], []
    for arg in args:
        if arg.startswith("config="):
            files.append(Path(arg.split("=", 1)[1]))
        elif "=" in arg:
            overrides.append(arg)
        elif arg.endswith((".yaml", ".yml")):
            files.append(Path(arg))
        else:
            raise ConfigError(f"config: expected key=value or a .yaml file, got {arg!r}")
    return files, overrides


def merge_config(cls: type[T], args: list[str]) -> Any:
    """Merge the dataclass defaults, YAML files and key=value overrides (OmegaConf DictConfig)."""
    files, overrides = _split_args(args)
    try:
        merged = OmegaConf.structured(cls)
        for path in files:
            if not path.is_file():
                raise ConfigError(f"config: {path}: no such file")
            try:
                loaded = OmegaConf.load(path)
            except Exception as e:  # yaml errors come in several types
                raise ConfigError(
                    f"config: {path}: expected YAML, got a parse error: {e}"
                ) from None
            merged = OmegaConf.merge(merged, loaded)
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as e:
        raise _config_error(cls, e) from None
    return merged


def set_direct(merged: Any, direct: dict[str, Any]) -> Any:
    """Set values verbatim (None = not given); `${` stays literal text, not an interpolation."""
    for key, value in direct.items():
        if isinstance(value, str):
            value = value.replace("${", "\\${")
        if value is not None:
            OmegaConf.update(merged, key, value, merge=False)
    return merged


def load_config(cls: type[T], args: list[str], direct: dict[str, Any] | None = None) -> T:
    """Build a stage config from YAML files and key=value overrides; errors name the key.

    `direct` sets values verbatim (from CLI flags such as `--prompt TEXT`), bypassing the
    key=value grammar so free text with commas or colons stays intact.
    """
    merged = set_direct(merge_config(cls, args), direct or {})
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(to_yaml(cfg), encoding="utf-8")
