"""rollout.py, the one generation path: padding, EOS and stop strings, seeding, K samples per
prompt, the sampler's logprobs, explicit sampling settings, the prompt-length filter."""

from __future__ import annotations

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
    """top_k=0 reaches transformers as 0 (full vocabulary), not as its default of 50; greedy
    decoding passes no sampling settings at all."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    seen = []
    original = model.generate

    def spy(*args, **kw):
        seen.append(kw["generation_config"])
        return original(*args, **kw)

    monkeypatch.setattr(model, "generate", spy)
    ids = rollout.encode_prompts(tokenizer, ["hi"])
    rollout.generate(model, tokenizer, ids, max_new_tokens=2, temperature=1.0, top_k=0, top_p=1.0)
    rollout.generate(model, tokenizer, ids, max_new_tokens=2, temperature=0.5, top_k=5, top_p=0.9)
    rollout.generate(model, tokenizer, ids, max_new_tokens=2, temperature=0)
    full, narrow, greedy = seen
    assert (full.top_k, full.top_p, full.temperature, full.do_sample) == (0, 1.0, 1.0, True)
    assert (narrow.top_k, narrow.top_p, narrow.temperature) == (5, 0.9, 0.5)
    assert greedy.do_sample is False


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
