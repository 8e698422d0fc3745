"""rollout.py, the one generation path: padding, EOS and stop strings, seeding, K samples per
prompt, the sampler's logprobs, explicit sampling settings, the prompt-length filter."""

from __future__ import annotations

import math
import re

import pytest
import torch

from instructrl import losses, models, rollout
from instructrl.errors import UserError
from instructrl.records import Prompt


def test_left_pad_by_hand():
    ids, mask = rollout.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]


def test_cut_response_and_stop():
    assert rollout.cut_response([4, 9, 2, 2, 2], {2}) == (
        [4, 9, 2],
        True,
    )  # first EOS kept, pad dropped
    assert rollout.cut_response([2, 5], {2}) == ([2], True)  # empty answer: EOS first
    assert rollout.cut_response([4, 9], {2}) == ([4, 9], False)
    assert rollout.apply_stop("a END b ### c", ["###", "END"]) == ("a ", True)
    assert rollout.apply_stop("abc", ["x", ""]) == ("abc", False)


def test_greedy_batch_equals_one_by_one(tiny_model_dir):
    """Left padding and position ids: a prompt's greedy answer does not depend on its batch."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    prompts = [
        "hi",
        "What is the capital of France? Answer in one sentence, please.",
        "List three colours",
    ]
    ids = rollout.encode_prompts(tokenizer, prompts)
    assert len({len(x) for x in ids}) == 3  # different lengths, so padding really happens
    batched = rollout.generate(model, tokenizer, ids, max_new_tokens=8, temperature=0, batch_size=3)
    alone = [
        rollout.generate(model, tokenizer, [x], max_new_tokens=8, temperature=0)[0] for x in ids
    ]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


def test_generated_tokens_follow_the_model(tiny_model_dir):
    """Greedy tokens equal the argmax of a fresh full forward over prompt + response (no cache)."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    [ids] = rollout.encode_prompts(tokenizer, ["Explain why the sky is blue"])
    [g] = rollout.generate(model, tokenizer, [ids], max_new_tokens=6, temperature=0)
    seq = torch.tensor([ids + g.token_ids])
    with torch.no_grad():
        logits = model(seq).logits[
            0, len(ids) - 1 : -1
        ]  # (T, V): logits that chose each response token
    assert logits.argmax(-1).tolist() == g.token_ids


def test_k_samples_per_prompt_equal_the_prompts_repeated(tiny_model_dir):
    """samples_per_prompt=K gives the same rows, seeds and texts as repeating each prompt K times."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    ids = rollout.encode_prompts(tokenizer, ["hi", "List three colours"])
    kw = {"max_new_tokens": 6, "temperature": 1.0, "batch_size": 3, "seed": 7}
    k = rollout.generate(model, tokenizer, ids, samples_per_prompt=3, **kw)
    repeated = rollout.generate(model, tokenizer, [x for x in ids for _ in range(3)], **kw)
    assert [g.token_ids for g in k] == [g.token_ids for g in repeated]
    assert [g.seed for g in k] == [7, 7, 7, 8, 8, 8]  # batch i is seeded seed + i
    assert len({tuple(g.token_ids) for g in k}) > 1  # sampling: the K samples differ


def test_sampler_logprobs_equal_a_fresh_forward(tiny_model_dir):
    """return_logprobs: the sampler's own log-probabilities (logits / temperature) equal those of
    a fresh forward pass over prompt + response, row by row and with padding."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    ids = rollout.encode_prompts(tokenizer, ["hi", "What is the capital of France?"])
    gens = rollout.generate(
        model, tokenizer, ids, max_new_tokens=6, temperature=0.7, batch_size=2, return_logprobs=True
    )
    for prompt, g in zip(ids, gens, strict=True):
        seq = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logits = model(seq).logits[0, len(prompt) - 1 : -1] / 0.7  # (T, V)
        expected = losses.token_logprobs(logits, torch.tensor(g.token_ids))
        torch.testing.assert_close(torch.tensor(g.logprobs), expected, atol=1e-4, rtol=1e-4)
    assert rollout.generate(model, tokenizer, ids[:1], max_new_tokens=2)[0].logprobs is None


def test_sampling_settings_are_explicit(tiny_model_dir, monkeypatch):
    """Nothing comes from the model's generation_config: the same tokens when it asks for other
    settings (top_k, temperature, top_p, do_sample, a minimum length); our sampler holds them."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    ids = rollout.encode_prompts(tokenizer, ["hi", "List three colours"])
    settings = [
        {"temperature": 1.0, "top_k": 0, "top_p": 1.0},
        {"temperature": 0.5, "top_k": 5, "top_p": 0.9},
        {"temperature": 0},
    ]
    built = []
    original_init = rollout.InverseCDFSampler.__init__

    def spy(self, **kw):
        original_init(self, **kw)
        built.append(self)

    monkeypatch.setattr(rollout.InverseCDFSampler, "__init__", spy)

    def tokens():
        return [
            [g.token_ids for g in rollout.generate(model, tokenizer, ids, max_new_tokens=6, **s)]
            for s in settings
        ]

    plain = tokens()
    config = model.generation_config
    config.top_k, config.temperature, config.top_p, config.do_sample = 3, 0.1, 0.5, True
    config.min_new_tokens = 5
    assert tokens() == plain
    full, narrow = built[:2]  # greedy builds no sampler
    assert len(built) == 4 and full.temperature == 1.0  # full vocabulary
    assert full.warpers == [] and full.nucleus is None
    assert narrow.temperature == 0.5 and narrow.nucleus.top_p == 0.9
    assert [type(w).__name__ for w in narrow.warpers] == ["TopKLogitsWarper"]


def test_inverse_cdf_sampler_draws_from_the_softmax():
    """Frequencies over 40,000 draws match softmax(logits / T) within 0.01; top-k keeps only the
    k best; every output row leaves exactly one token standing."""
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).repeat(40_000, 1)
    ids = torch.zeros((40_000, 1), dtype=torch.long)
    out = rollout.InverseCDFSampler(temperature=1.0, top_k=0, top_p=1.0)(ids, logits)
    assert torch.isfinite(out).sum(1).eq(1).all()
    freq = torch.bincount(out.argmax(1), minlength=4).float() / 40_000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.01, rtol=0)
    # temperature 2: p proportional to sqrt(p): sqrt(.1), sqrt(.2), sqrt(.3), sqrt(.4)
    out = rollout.InverseCDFSampler(temperature=2.0, top_k=0, top_p=1.0)(ids, logits)
    expected = torch.tensor([0.1, 0.2, 0.3, 0.4]).sqrt()
    freq = torch.bincount(out.argmax(1), minlength=4).float() / 40_000
    torch.testing.assert_close(freq, expected / expected.sum(), atol=0.01, rtol=0)
    # top-k 2: only the two likeliest, renormalised: 3/7 and 4/7
    out = rollout.InverseCDFSampler(temperature=1.0, top_k=2, top_p=1.0)(ids, logits)
    freq = torch.bincount(out.argmax(1), minlength=4).float() / 40_000
    torch.testing.assert_close(freq, torch.tensor([0, 0, 3 / 7, 4 / 7]), atol=0.01, rtol=0)
    # top-p 0.6, drawn inside the nucleus: 0.4 alone is short of 0.6, so 0.4 and 0.3 stand
    out = rollout.InverseCDFSampler(temperature=1.0, top_k=0, top_p=0.6)(ids, logits)
    assert torch.isfinite(out).sum(1).eq(1).all()
    freq = torch.bincount(out.argmax(1), minlength=4).float() / 40_000
    torch.testing.assert_close(freq, torch.tensor([0, 0, 3 / 7, 4 / 7]), atol=0.01, rtol=0)
    # top-k 3 then top-p 0.5 at temperature 2: sqrt(.2), sqrt(.3), sqrt(.4) renormalised are
    # .27, .33, .39; the nucleus is .39 and .33, renormalised
    out = rollout.InverseCDFSampler(temperature=2.0, top_k=3, top_p=0.5)(ids, logits)
    kept = torch.tensor([0, 0, 0.3, 0.4]).sqrt()
    freq = torch.bincount(out.argmax(1), minlength=4).float() / 40_000
    torch.testing.assert_close(freq, kept / kept.sum(), atol=0.01, rtol=0)


@pytest.mark.parametrize("scale", [0.01, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("top_p", [0.1, 0.9, 0.99])
def test_nucleus_warper_keeps_what_transformers_top_p_keeps(scale, top_p):
    """The same tokens stand, with the same scores, as after transformers' TopPLogitsWarper
    (which sorts the whole vocabulary), from peaked logits whose nucleus lies in the first
    256 tokens to flat ones that make the warper widen to the whole vocabulary; a -inf from
    top-k stays out."""
    from transformers import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(16, 3000) * scale
    logits[0, 5:] = float("-inf")  # as left by top-k 5
    expected = TopPLogitsWarper(top_p)(None, logits.clone())
    got = rollout.NucleusWarper(top_p)(None, logits.clone())
    assert torch.equal(got, expected)
    assert torch.isfinite(got).sum(1).min() >= 1


def test_encode_within_drops_long_prompts_with_a_count(tiny_model_dir, caplog):
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    prompts = [Prompt(id="a", prompt="hi"), Prompt(id="b", prompt="word " * 200)]
    short = len(rollout.encode_prompts(tokenizer, ["hi"])[0])
    kept = rollout.encode_within(tokenizer, prompts, max_prompt_tokens=short, where="test")
    assert [p.id for p, _ in kept] == ["a"]
    assert kept[0][1] == rollout.encode_prompts(tokenizer, ["hi"])[0]
    assert "dropped 1 of 2 prompts longer than max_prompt_tokens" in caplog.text
    with pytest.raises(UserError, match="test: every prompt is longer than max_prompt_tokens=2"):
        rollout.encode_within(tokenizer, prompts, max_prompt_tokens=2, where="test")


def test_encode_response_by_hand(tiny_model_dir):
    """prompt ids + response ids + EOS, cut at max_length (losing the EOS); None when the
    prompt leaves fewer than 8 tokens."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    p = rollout.encode_prompts(tokenizer, ["hi"])[0]
    text = "one two three four five six seven eight nine ten"
    r = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(r) >= 8
    ids, n_prompt, cut = rollout.encode_response(tokenizer, "hi", text, max_length=100)
    assert (ids, n_prompt, cut) == (p + r + [tokenizer.eos_token_id], len(p), False)
    ids, _, cut = rollout.encode_response(tokenizer, "hi", text, max_length=len(p) + len(r))
    assert ids == p + r and cut
    assert rollout.encode_response(tokenizer, "hi", "a", max_length=len(p) + 7) is None


@pytest.mark.parametrize("k", [2, 3])
def test_shared_prefill_equals_separate_prompts(tiny_model_dir, k):
    """K samples from one shared prefill (the prompt encoded once, its KV cache repeated) are
    the K samples of the prompt repeated K times, under the same seeds."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    ids = rollout.encode_prompts(tokenizer, ["hi", "What is the capital of France?", "List"])
    kw = {"max_new_tokens": 6, "temperature": 1.0, "batch_size": 2 * k, "seed": 11}
    rows = []
    original = model.forward

    def spy(*args, **kwargs):
        rows.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(model, "forward", spy)
        shared = rollout.generate(
            model, tokenizer, ids, samples_per_prompt=k, share_prefill=True, **kw
        )
    separate = rollout.generate(model, tokenizer, ids, samples_per_prompt=k, **kw)
    assert [g.token_ids for g in shared] == [g.token_ids for g in separate]
    assert [g.seed for g in shared] == [g.seed for g in separate]
    # the first batch's prompts were encoded once: 2 rows of P - 1 tokens, then 2k rows of 1
    width = max(len(x) for x in ids[:2])
    assert rows[0] == (2, width - 1) and rows[1] == (2 * k, 1)


@pytest.mark.parametrize("quantize", ["bf16", "int8"])
def test_low_precision_engine_is_close_and_refreshes(tiny_model_dir, quantize):
    """rollout.quantize=bf16 / int8: greedy log-probabilities within 0.05 nats a token of the
    fp32 model's; sync() takes the policy's new weights."""
    from instructrl.config import RolloutConfig

    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    engine = rollout.Engine(model, tokenizer, RolloutConfig(quantize=quantize))
    assert not engine.exact and engine.model is not model
    ids = rollout.encode_prompts(tokenizer, ["Explain why the sky is blue", "hi"])
    gens = engine.generate(ids, max_new_tokens=6, temperature=0, return_logprobs=True)
    for prompt, g in zip(ids, gens, strict=True):
        seq = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logits = model(seq).logits[0, len(prompt) - 1 : -1]
        fp32 = losses.token_logprobs(logits, torch.tensor(g.token_ids))
        assert (fp32 - torch.tensor(g.logprobs)).abs().max().item() < 0.05
    with torch.no_grad():
        model.lm_head.weight.mul_(0)  # a changed policy: every logit 0
    engine.sync(model)
    [g] = engine.generate(ids[:1], max_new_tokens=2, temperature=0, return_logprobs=True)
    vocab = model.config.vocab_size
    assert g.logprobs[0] == pytest.approx(-math.log(vocab), abs=1e-3)


def test_auto_quantize_takes_bf16_only_where_the_cpu_multiplies_it(tiny_model_dir, monkeypatch):
    """rollout.quantize=auto: a bf16 copy on a CPU with native bfloat16, the policy itself on a
    CPU without it and on a GPU; an explicit choice is kept as it is."""
    from instructrl.config import RolloutConfig

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert rollout.resolve_quantize("auto", "cpu") == "bf16"
    assert rollout.resolve_quantize("auto", "cuda:0") == "none"
    assert rollout.resolve_quantize("int8", "cpu") == "int8"
    model = models.load_policy(str(tiny_model_dir))
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    engine = rollout.Engine(model, tokenizer, RolloutConfig(quantize="auto"))
    assert not engine.exact and next(engine.model.parameters()).dtype == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert rollout.resolve_quantize("auto", "cpu") == "none"
    engine = rollout.Engine(model, tokenizer, RolloutConfig(quantize="auto"))
    assert engine.exact and engine.model is model


def test_engine_of_a_sharded_policy_samples_from_a_gathered_copy(tiny_model_dir):
    """Under FSDP the engine samples from its own whole copy loaded from the gathered state
    dict (full_weights; here the plain state dict stands in for the FSDP collective): the same
    greedy tokens and log-probabilities as the policy, its own module, and every sync() loads
    the policy's new weights (every one, frozen or not: the gather is whole)."""
    from instructrl.config import RolloutConfig

    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    gathered = []

    def full_weights():
        gathered.append(1)
        return model.state_dict()

    engine = rollout.Engine(model, tokenizer, RolloutConfig(), full_weights=full_weights)
    assert engine.kind == "gathered" and not engine.exact and engine.model is not model
    assert len(gathered) == 1
    ids = rollout.encode_prompts(tokenizer, ["Explain why the sky is blue", "hi"])
    kw = {"max_new_tokens": 6, "temperature": 0, "return_logprobs": True}
    ours, theirs = engine.generate(ids, **kw), rollout.generate(model, tokenizer, ids, **kw)
    assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(0)  # a changed policy: every logit 0
    copy_before = engine.model
    engine.sync(model)
    assert len(gathered) == 2 and engine.model is copy_before  # loaded in place, not rebuilt
    [g] = engine.generate(ids[:1], max_new_tokens=2, temperature=0, return_logprobs=True)
    assert g.logprobs[0] == pytest.approx(-math.log(model.config.vocab_size), abs=1e-4)
    with pytest.raises(UserError, match="int8 under FSDP"):
        rollout.Engine(model, tokenizer, RolloutConfig(quantize="int8"), full_weights=full_weights)


def test_unknown_engine_is_a_config_error():
    from instructrl.config import RolloutConfig
    from instructrl.errors import ConfigError

    with pytest.raises(
        ConfigError, match=re.escape("rollout.engine: expected one of hf, got 'vllm'")
    ):
        RolloutConfig(engine="vllm")
    with pytest.raises(
        ConfigError, match=re.escape("rollout.quantize: expected one of none, auto, bf16, int8")
    ):
        RolloutConfig(quantize="int4")


@pytest.mark.parametrize("quantize", ["bf16", "int8"])
def test_low_precision_refresh_equals_a_fresh_copy(tiny_model_dir, quantize):
    """After an update of the trainable layers, refreshing the bf16 / int8 copy in place gives
    the same logits as converting the whole policy again (frozen layers are reused as they are)."""
    from instructrl.config import RolloutConfig
    from instructrl.trainer import freeze_lower

    model = models.load_policy(str(tiny_model_dir))
    freeze_lower(model, 1)  # layer 0 and the embeddings frozen
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    engine = rollout.Engine(model, tokenizer, RolloutConfig(quantize=quantize))
    before = engine.model
    frozen_q = before.model.layers[0].mlp.up_proj
    with torch.no_grad():  # a training step's worth of change in every trainable weight
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    engine.sync(model)
    assert engine.model is before and engine.model.model.layers[0].mlp.up_proj is frozen_q
    ids = torch.tensor([[5, 9, 14, 3, 8, 21]])
    with torch.no_grad():
        refreshed = engine.model(ids).logits
        fresh = rollout.low_precision_copy(model, quantize)(ids).logits
    torch.testing.assert_close(refreshed, fresh, atol=1e-6, rtol=0)
    stale = rollout.low_precision_copy(models.load_policy(str(tiny_model_dir)), quantize)
    with torch.no_grad():
        assert (stale(ids).logits - fresh).abs().max() > 1e-3  # the update did change outputs


def test_rows_that_end_leave_the_batch_and_the_others_decode_as_generate_does(tiny_model_dir):
    """decode drops rows that sampled EOS from the batch and its KV cache: greedy tokens equal
    transformers' generate on the same left-padded batch, while the forward passes see the
    batch shrink; sampled log-probabilities after the drop equal a fresh forward pass."""
    from collections import Counter

    from transformers import GenerationConfig

    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    torch.manual_seed(0)
    with torch.no_grad():  # larger weights: greedy answers that differ between prompts
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    prompts = [f"Tell me {w} things about number {i}." for i, w in enumerate("abcdefgh")]
    ids = rollout.encode_prompts(tokenizer, ["hi", "List three colours", *prompts])
    free = rollout.generate(model, tokenizer, ids, max_new_tokens=12, temperature=0, batch_size=10)
    # an extra EOS: a token that some rows write early and others never, so rows end apart
    firsts = Counter(t for g in free for t in set(g.token_ids[:6]))
    stop_token = next(t for t, c in firsts.most_common() if c < len(ids) - 2)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop_token]
    eos = rollout.eos_token_ids(model, tokenizer)
    rows = []
    original = model.forward

    def spy(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(model, "forward", spy)
        ours = rollout.generate(
            model, tokenizer, ids, max_new_tokens=12, temperature=0, batch_size=10
        )
    input_ids, mask = rollout.left_pad(ids, tokenizer.pad_token_id)
    reference = model.generate(
        input_ids=input_ids,
        attention_mask=mask.long(),
        generation_config=GenerationConfig(
            do_sample=False,
            max_new_tokens=12,
            eos_token_id=sorted(eos),
            pad_token_id=tokenizer.pad_token_id,
        ),
    )[:, input_ids.shape[1] :]
    expected = [rollout.cut_response(row, eos)[0] for row in reference.tolist()]
    assert [g.token_ids for g in ours] == expected
    ended = [g for g in ours if g.finish_reason == "eos"]
    assert 2 <= len(ended) < len(ids) and min(rows) < 10 == rows[0]  # the batch shrank
    sampled = rollout.generate(
        model,
        tokenizer,
        ids,
        max_new_tokens=12,
        temperature=0.8,
        batch_size=10,
        seed=4,
        return_logprobs=True,
    )
    assert any(g.finish_reason == "eos" for g in sampled)
    for prompt, g in zip(ids, sampled, strict=True):
        seq = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logits = model(seq).logits[0, len(prompt) - 1 : -1] / 0.8
        expected_lp = losses.token_logprobs(logits, torch.tensor(g.token_ids))
        torch.testing.assert_close(torch.tensor(g.logprobs), expected_lp, atol=1e-4, rtol=1e-4)
