"""batches.py by hand and against independent paths: right padding, loss masks, the K-way
batch layout, the NLL of a batch against full-vocabulary logits, RM scores one by one."""

from __future__ import annotations

import pytest
import torch

from instructrl import batches, models, rollout

T, F = True, False


def test_right_pad_and_loss_mask_by_hand():
    ids, attn = batches.right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attn.tolist() == [[T, T, T], [T, F, F]]
    examples = [batches.Example([1, 2, 3, 4], n_prompt=2), batches.Example([7, 8], n_prompt=0)]
    ids, attn, mask = batches.collate(examples, pad_id=0)
    # the response starts at index 2; a pretraining chunk (n_prompt 0) loses only its first token
    assert mask.tolist() == [[F, F, T, T], [F, T, F, F]]
    assert attn.tolist() == [[T, T, T, T], [T, T, F, F]]


def test_ranked_batch_layout_by_hand():
    examples = [
        batches.RankedExample([[1, 2], [3], [4, 5, 6]], [0, 2, 1]),
        batches.RankedExample([[7], [8, 9]], [1, 0]),
    ]
    ids, attn, ranks, valid, rows = batches.collate_ranked(examples, pad_id=0)
    assert ids.tolist() == [[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 0, 0], [8, 9, 0]]
    assert ranks.tolist() == [[0, 2, 1], [1, 0, 0]]
    assert valid.tolist() == [[T, T, T], [T, T, F]]
    assert rows.tolist() == [[0, 1, 2], [3, 4, -1]]
    assert attn.sum(1).tolist() == [2, 1, 3, 1, 2]


def test_nll_equals_cross_entropy_over_full_logits(tiny_model_dir):
    model = models.load_policy(str(tiny_model_dir))
    examples = [batches.Example([5, 9, 14, 3, 8], 2), batches.Example([4, 11, 6], 1)]
    ids, attn, mask = batches.collate(examples, pad_id=0)
    loss, stats = batches.nll_loss(model, ids, attn, mask)
    terms = []
    for e in examples:  # one unpadded forward per example, every position's logits
        logits = model(torch.tensor([e.input_ids])).logits[0]
        for t in range(max(e.n_prompt, 1), len(e.input_ids)):
            terms.append(-torch.log_softmax(logits[t - 1], -1)[e.input_ids[t]])
    assert int(stats["tokens"]) == len(terms) == 5
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
    mean = batches.mean_nll(model, examples, 0, batch_size=1, device="cpu")
    assert abs(mean - loss.item()) < 1e-5  # token-weighted, whatever the batch size


def test_score_texts_shares_each_prompts_forward_and_equals_plain_batches(
    tiny_model_dir, monkeypatch
):
    """Our RM: the responses of one prompt go through one shared-prefix forward (at most
    batch_size rows); a wrapper that only forwards to the RM takes plain length batches. The
    rewards agree with each other and with one full forward per sequence."""
    tokenizer = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    rm = models.new_reward_model(str(tiny_model_dir), dtype=torch.float32).eval()
    answers = ["Blue.", "It is blue", "B", "Grey today, and more", "blue?"]
    pairs = [("What colour is the sky?", a) for a in answers] + [("hi", "hello"), ("x", "y z")]
    reasons = ["eos", "eos", "eos", "length", "eos", "eos", "eos"]
    calls = []
    real = batches.shared_prefix_hidden
    monkeypatch.setattr(
        batches,
        "shared_prefix_hidden",
        lambda b, rows, pad, **k: calls.append(len(rows)) or real(b, rows, pad, **k),
    )
    kw = {"max_length": 64, "device": "cpu", "finish_reasons": reasons}
    shared = batches.score_texts(rm, tokenizer, pairs, batch_size=3, **kw)
    assert sorted(calls) == [2, 3]  # the sky's 5 answers in chunks of 3 and 2; the others alone

    class Wrapper(torch.nn.Module):  # e.g. DDP: forwards, has no backbone of its own
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, ids, attn):
            return self.module(ids, attn)

    calls.clear()
    plain = batches.score_texts(Wrapper(rm), tokenizer, pairs, batch_size=3, **kw)
    assert calls == []
    assert shared == pytest.approx(plain, abs=1e-5)
    for (p, r), f, score in zip(pairs, reasons, shared, strict=True):
        ids = rollout.encode_response(tokenizer, p, r, max_length=64, ended=f == "eos")[0]
        ids = torch.tensor([ids])
        assert rm(ids, torch.ones_like(ids)).item() == pytest.approx(score, abs=1e-5)


def test_score_texts_in_a_batch_equals_one_by_one(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    rm = models.new_reward_model(str(tiny_model_dir), dtype=torch.float32).eval()
    pairs = [("hi", "hello there"), ("What is 2 + 2?", "4"), ("x", "a much longer answer here")]
    pairs += [pairs[2], ("hi", "hello there, and more"), pairs[0]]  # repeats, out of length order
    reasons = ["eos", "eos", "eos", "eos", "length", "length"]  # the last: pairs[0] cut off
    kw = {"max_length": 64, "device": "cpu"}
    together = batches.score_texts(rm, tokenizer, pairs, batch_size=2, finish_reasons=reasons, **kw)
    alone = [
        batches.score_texts(rm, tokenizer, [p], batch_size=1, finish_reasons=[f], **kw)[0]
        for p, f in zip(pairs, reasons, strict=True)
    ]
    assert together == pytest.approx(alone, abs=1e-5)
    assert together[3] == together[2] and together[5] != together[0]  # no EOS: another sequence
    assert len(set(together)) == 5
