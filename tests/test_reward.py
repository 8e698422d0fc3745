"""Reward model: the K-way loss against a loop over pairs, one forward per completion,
mixed K, normalisation, and the reward token under either padding."""

from __future__ import annotations

import json
import math

import pytest
import torch

from instructrl import batches, losses, models
from instructrl.config import RMConfig, ScoreConfig, load_config
from instructrl.errors import UserError
from instructrl.records import Comparison
from instructrl.stages import reward

RESPONSES = [
    "The capital of France is Paris.",
    "Paris.",
    "I think it is Lyon, maybe.",
    "banana banana banana",
    "France's capital city is Paris, on the Seine.",
    "Rome.",
    "Not sure.",
    "Paris is the capital.",
    "x",
]


def test_ranking_loss_by_hand():
    # K = 2, r = [1, 0], 0 ranked first: loss = -log sigmoid(1) = log(1 + e^-1) = 0.31326
    loss, stats = losses.ranking_loss(
        rewards=torch.tensor([[1.0, 0.0]]),
        ranks=torch.tensor([[0, 1]]),
        valid=torch.ones(1, 2, dtype=torch.bool),
    )
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert (stats["accuracy"].item(), stats["pairs"].item()) == (1.0, 1)
    # K = 3, r = [0, 0, 0]: each of the 3 pairs costs log 2; with 1 and 2 tied only 2 pairs remain
    zeros = torch.zeros(1, 3)
    loss, stats = losses.ranking_loss(
        rewards=zeros, ranks=torch.tensor([[0, 1, 1]]), valid=torch.ones(1, 3, dtype=torch.bool)
    )
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and stats["pairs"].item() == 2
    # an invalid slot holding inf changes nothing
    loss2, _ = losses.ranking_loss(
        rewards=torch.tensor([[0.0, 0.0, 0.0, float("inf")]]),
        ranks=torch.tensor([[0, 1, 1, 0]]),
        valid=torch.tensor([[True, True, True, False]]),
    )
    assert loss2.item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.fixture(scope="module")
def rm_and_tok(tiny_model_dir):
    torch.manual_seed(0)
    return models.new_reward_model(str(tiny_model_dir)).eval(), models.load_tokenizer(
        str(tiny_model_dir), padding_side="right"
    )


def _examples(tok, ks, seed=0):
    g = torch.Generator().manual_seed(seed)
    comps = []
    for b, k in enumerate(ks):
        order = torch.randperm(k, generator=g).tolist()
        ranking = (
            [order[0], [order[1], order[2]], *order[3:]] if k >= 4 else order
        )  # one tie when K >= 4
        comps.append(
            Comparison(
                prompt=f"Question {b}: what is the capital of France?",
                responses=RESPONSES[:k],
                ranking=ranking,
            )
        )
    examples, _ = reward.encode_comparisons(tok, comps, max_length=128, where="t")
    return comps, examples


def test_batched_loss_and_gradient_equal_a_loop_over_pairs(rm_and_tok):
    model, tok = rm_and_tok
    comps, examples = _examples(tok, [4, 9, 2])
    model.zero_grad()
    loss, _, _ = reward.batch_loss(model, examples, tok.pad_token_id, "cpu")
    loss.backward()
    batched = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    per_prompt = []
    for c, e in zip(comps, examples, strict=True):
        terms = []
        for w, lo in c.pairs():  # each pair its own two-example batch, as pairwise trainers do
            ids, attn, _, _, _ = batches.collate_ranked(
                [batches.RankedExample([e.completions[w], e.completions[lo]], [0, 1])],
                tok.pad_token_id,
            )
            r = model(ids, attn)
            terms.append(-torch.nn.functional.logsigmoid(r[0] - r[1]))
        per_prompt.append(sum(terms) / len(terms))
    looped = sum(per_prompt) / len(per_prompt)
    looped.backward()
    assert loss.item() == pytest.approx(looped.item(), abs=1e-6)
    for name, grad in batched.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, atol=1e-6, rtol=1e-5)


def test_one_forward_per_completion(rm_and_tok):
    model, tok = rm_and_tok
    _, examples = _examples(tok, [4, 9, 2])
    rows = []
    hook = model.backbone.get_input_embeddings().register_forward_hook(
        lambda m, i, o: rows.append(i[0].shape[0])
    )
    try:
        reward.batch_loss(model, examples, tok.pad_token_id, "cpu")
    finally:
        hook.remove()
    assert rows == [4 + 9 + 2]  # K forwards per prompt in one pass, not K(K-1)


def test_mixed_k_equals_each_prompt_alone(rm_and_tok):
    model, tok = rm_and_tok
    _, examples = _examples(tok, [3, 9, 5, 2], seed=1)
    with torch.no_grad():
        together = reward.batch_loss(model, examples, tok.pad_token_id, "cpu")[0]
        alone = [reward.batch_loss(model, [e], tok.pad_token_id, "cpu")[0] for e in examples]
    assert together.item() == pytest.approx(sum(a.item() for a in alone) / len(alone), abs=1e-6)


def test_reward_token_under_left_and_right_padding(rm_and_tok):
    model, tok = rm_and_tok
    seqs = [
        tok("short one")["input_ids"] + [tok.eos_token_id],
        tok("a much longer sequence of words here")["input_ids"] + [tok.eos_token_id],
    ]
    width = max(map(len, seqs))
    right_ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    right_mask = torch.tensor([[True] * len(s) + [False] * (width - len(s)) for s in seqs])
    left_ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs])
    left_mask = torch.tensor([[False] * (width - len(s)) + [True] * len(s) for s in seqs])
    assert models.last_true(right_mask).tolist() == [len(seqs[0]) - 1, width - 1]
    assert models.last_true(left_mask).tolist() == [width - 1, width - 1]
    with torch.no_grad():
        alone = torch.stack(
            [model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.bool))[0] for s in seqs]
        )
        torch.testing.assert_close(model(right_ids, right_mask), alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(left_ids, left_mask), alone, atol=1e-5, rtol=0)


def _rm_config(tiny_model_dir, tmp_path, comparisons, demos, *overrides):
    """An RM stage config on these comparison and demonstration rows, written to tmp_path."""
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comparisons))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    return load_config(
        RMConfig,
        [
            f"model={tiny_model_dir}",
            f"data={tmp_path / 'c.jsonl'}",
            f"demos={tmp_path / 'd.jsonl'}",
            f"out={tmp_path / 'rm'}",
            *overrides,
        ],
    )


def test_rm_stage_normalises_and_reloads(tiny_model_dir, tmp_path):
    comps = [
        {
            "prompt_id": f"p{i}",
            "prompt": f"Question {i}?",
            "responses": RESPONSES[:4],
            "ranking": [0, 1, 2, 3],
        }
        for i in range(12)
    ]
    demos = [{"prompt": f"Question {i}?", "response": RESPONSES[i % 3]} for i in range(10)]
    cfg = _rm_config(
        tiny_model_dir,
        tmp_path,
        comps,
        demos,
        f"heldout_data={tmp_path / 'c.jsonl'}",
        "lr=1e-3",
        "epochs=2",
    )
    out = reward.run(cfg)
    rm = models.load_reward_model(out)
    tok = models.load_tokenizer(str(out), padding_side="right")
    scores = batches.score_texts(
        rm,
        tok,
        [(d["prompt"], d["response"]) for d in demos],
        batch_size=3,
        max_length=256,
        device="cpu",
    )
    assert abs(sum(scores) / len(scores)) < 1e-5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rm/val_accuracy" in r for r in rows) and any(
        "rm/heldout_accuracy" in r for r in rows
    )
    assert rows[-1]["rm/heldout_accuracy"] > 0.7  # learns the shared order
    assert json.loads((out / "config.json").read_text())["instructrl"]["type"] == "reward"
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "| rm/heldout_accuracy |" in card
    assert (
        f"- data: `{tmp_path / 'c.jsonl'}`" in card and "the logit plus `instructrl.bias`" in card
    )
    # the standard form: transformers' own class scores what `instructrl score` scores
    samples = out.parent / "samples.jsonl"
    reasons = ["stop", "length", "stop", "length"]
    samples.write_text(
        "".join(
            json.dumps(
                {
                    "prompt_id": f"p{i}",
                    "prompt": f"Question {i}?",
                    "response": RESPONSES[i],
                    "model": "m",
                    "finish_reason": reasons[i],
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    scored = reward.run_score(
        load_config(
            ScoreConfig, [f"reward={out}", f"data={samples}", f"out={out.parent / 's.jsonl'}"]
        )
    )
    ours = [json.loads(line)["reward"] for line in scored.read_text().splitlines()]
    assert_hf_logits_equal(out, samples, ours)  # finished (EOS last) and cut-off responses


def assert_hf_logits_equal(rm_dir, samples, rewards):
    """AutoModelForSequenceClassification on the RM directory, fed the sequences a reward model
    reads (right-padded with the directory's tokenizer), gives logit + config bias = rewards."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from instructrl.rollout import encode_response

    hf = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    tok = AutoTokenizer.from_pretrained(rm_dir)
    assert tok.pad_token_id == hf.config.pad_token_id != tok.eos_token_id
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    ids = [
        encode_response(
            tok, r["prompt"], r["response"], max_length=256, ended=r["finish_reason"] != "length"
        )[0]
        for r in rows
    ]
    input_ids, attention = batches.right_pad(ids, tok.pad_token_id)
    with torch.no_grad():
        logits = hf(input_ids=input_ids, attention_mask=attention.long()).logits.squeeze(-1)
    bias = hf.config.instructrl["bias"] if hasattr(hf.config, "instructrl") else 0.0
    assert (logits + bias).tolist() == pytest.approx(rewards, abs=1e-5)


def _longer_wins_rows(n: int = 12) -> list[dict]:
    """Comparison rows in which the longer response always wins: a feature a head can find."""
    responses = ["ok", "ok then fine", "ok then fine and good, yes indeed quite so"]
    return [
        {
            "prompt_id": f"p{i}",
            "prompt": f"Question {i}?",
            "responses": responses,
            "ranking": [2, 1, 0],
        }
        for i in range(n)
    ]


def test_head_only_rm_learns_a_feature_and_is_a_plain_reward_model(tiny_model_dir, tmp_path):
    """head_only: the head is fitted on frozen features; after folding the standardisation in,
    the saved model scores like any reward model, and ranks by the feature it was shown."""
    from instructrl.config import RMConfig, load_config
    from instructrl.stages import reward

    rows = _longer_wins_rows()
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        RMConfig,
        [
            f"model={tiny_model_dir}",
            f"data={data}",
            f"out={tmp_path / 'rm'}",
            "head_only=true",
            "head_epochs=100",
            "val_fraction=0.25",
        ],
    )
    out = reward.run(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["rm/accuracy"] == 1.0 and metrics[-1]["rm/val_accuracy"] == 1.0
    rm = models.load_reward_model(out)
    tok = models.load_tokenizer(str(out), padding_side="right")
    comparisons = [Comparison.from_dict(r) for r in rows[:3]]
    examples, _ = reward.encode_comparisons(tok, comparisons, max_length=64, where="t")
    accuracy = reward.evaluate(rm, examples, tok.pad_token_id, 4, "cpu")["accuracy"]
    assert accuracy == 1.0  # the saved model (head folded, bias) ranks as the fitted head did
    base = models.new_reward_model(str(tiny_model_dir))
    for name, p in base.backbone.named_parameters():  # the backbone did not move
        torch.testing.assert_close(p, dict(rm.backbone.named_parameters())[name])


def test_shared_prefix_features_equal_one_forward_per_completion(rm_and_tok):
    """The RM's head_only features: the K completions' common prefix computed once (cached)
    against each completion's own full forward (uncached)."""
    rm, tok = rm_and_tok
    prompt = tok("Question: what colour is the sky?")["input_ids"]
    rows = [prompt + tok(r)["input_ids"] + [tok.eos_token_id] for r in ["Blue.", "It is blue", "B"]]
    rows.append(prompt + tok("Grey today, and")["input_ids"])  # cut off: no EOS
    cached = batches.shared_prefix_hidden(rm.backbone, rows, tok.pad_token_id)
    for i, row in enumerate(rows):
        ids = torch.tensor([row])
        full = models.final_hidden(rm.backbone, ids, torch.ones_like(ids))[0, -1]
        torch.testing.assert_close(cached[i], full, atol=1e-5, rtol=1e-4)
    same = batches.shared_prefix_hidden(rm.backbone, [rows[0], rows[0]], tok.pad_token_id)
    torch.testing.assert_close(same[0], same[1])


def test_split_features_compute_each_shared_example_once(rm_and_tok, monkeypatch):
    """val and heldout rank the same completions: one forward each, the same features as each
    split computed alone, in each split's own order."""
    rm, tok = rm_and_tok
    _, examples = _examples(tok, [4, 3, 5, 4])
    splits = {"train": examples[:2], "val": examples[2:], "heldout": examples[:1:-1], "x": []}
    alone = {n: reward.head_features(rm, e, tok.pad_token_id) for n, e in splits.items() if e}
    calls = []
    real = reward.shared_prefix_hidden
    monkeypatch.setattr(
        reward, "shared_prefix_hidden", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    feats = reward.split_features(rm, splits, tok.pad_token_id)
    assert len(calls) == len(examples) == 4 and set(feats) == {"train", "val", "heldout"}
    for name in feats:
        torch.testing.assert_close(feats[name], alone[name])


def test_head_only_rm_in_bf16_is_scored_as_it_was_trained(tiny_model_dir, tmp_path):
    """rm.quantize=bf16: features and the demonstrations' bias come from a bf16 backbone; the
    saved backbone keeps the SFT model's fp32 weights, load_reward_model reads it back in bf16
    (demonstrations then score exactly 0 on average, as normalised) and a value model loaded in
    fp32 holds the SFT weights bit for bit."""
    from instructrl.config import ConfigError, RMConfig, load_config
    from instructrl.stages import reward

    comps = [
        {"prompt_id": f"p{i}", "prompt": f"Question {i}?", "responses": RESPONSES[:4],
         "ranking": [0, 1, 2, 3]}
        for i in range(12)
    ]  # fmt: skip
    demos = [{"prompt": f"Question {i}?", "response": RESPONSES[i % 3]} for i in range(10)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comps))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    args = [
        f"model={tiny_model_dir}",
        f"data={tmp_path / 'c.jsonl'}",
        f"demos={tmp_path / 'd.jsonl'}",
        f"out={tmp_path / 'rm'}",
        "head_epochs=50",
        "quantize=bf16",
    ]
    with pytest.raises(ConfigError, match="head_only"):
        load_config(RMConfig, args)
    out = reward.run(load_config(RMConfig, [*args, "head_only=true"]))
    assert json.loads((out / "config.json").read_text())["instructrl"]["dtype"] == "bfloat16"
    tok = models.load_tokenizer(str(out), padding_side="right")

    def demo_mean(rm) -> float:
        pairs = [(d["prompt"], d["response"]) for d in demos]
        scores = batches.score_texts(rm, tok, pairs, batch_size=3, max_length=256, device="cpu")
        return sum(scores) / len(scores)

    rm = models.load_reward_model(out)
    assert next(rm.backbone.parameters()).dtype == torch.bfloat16
    assert abs(demo_mean(rm)) < 1e-5
    fp32 = models.load_reward_model(out, dtype=torch.float32)
    assert abs(demo_mean(fp32)) > 1e-4  # the precision matters: fp32 features score otherwise
    base = models.load_policy(str(tiny_model_dir))
    for name, p in base.named_parameters():
        if name != "lm_head.weight":
            torch.testing.assert_close(
                p, dict(fp32.backbone.named_parameters())[name], atol=0, rtol=0
            )


def _mean_rm_and_rows(tiny_model_dir):
    """A mean-pooled reward model and three rows of one prompt whose responses share their
    first tokens (finished, finished, cut off), with the prompt's length."""
    torch.manual_seed(0)
    rm = models.new_reward_model(str(tiny_model_dir), pooling="mean").eval()
    tok = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    prompt = tok("Question: what colour is the sky?", add_special_tokens=False)["input_ids"]
    answer = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = [
        prompt + answer("It is blue.") + [tok.eos_token_id],
        prompt + answer("It is grey today") + [tok.eos_token_id],
        prompt + answer("It is"),  # cut off: no EOS
    ]
    return rm, tok, rows, len(prompt)


def test_mean_pooled_reward_is_the_mean_of_per_token_scores_over_the_response(tiny_model_dir):
    """pooling=mean: each row's reward is the mean of the head's per-token scores over its
    response tokens (each row alone, no padding), under right and left padding and through the
    shared-prefix pass, which must not swallow the responses' common opening."""
    rm, tok, rows, p = _mean_rm_and_rows(tiny_model_dir)
    assert rows[0][p] == rows[1][p] == rows[2][p]  # the responses share an opening token
    with torch.no_grad():
        expected = []
        for row in rows:
            ids = torch.tensor([row])
            expected.append(rm(ids, torch.ones_like(ids), per_token=True)[0, p:].mean())
        expected = torch.stack(expected)
        ids, attn = batches.right_pad(rows, tok.pad_token_id)
        torch.testing.assert_close(rm(ids, attn, response_start=torch.full((3,), p)), expected)
        from instructrl.rollout import left_pad

        ids, attn = left_pad(rows, tok.pad_token_id)
        padding = torch.tensor([ids.shape[1] - len(r) for r in rows])
        torch.testing.assert_close(rm(ids, attn, response_start=p + padding), expected)
        shared = batches.shared_prefix_hidden(
            rm.backbone, rows, tok.pad_token_id, pooling="mean", response_start=p
        )
        torch.testing.assert_close(rm.reward_of_hidden(shared), expected, atol=1e-5, rtol=1e-4)
        last = models.pool_hidden(models.final_hidden(rm.backbone, ids, attn), attn, "last")
        assert not torch.allclose(rm.reward_of_hidden(last), expected)  # pooling matters here
    with pytest.raises(ValueError, match="response_start"):
        rm(ids, attn)


def test_mean_pooled_batch_loss_equals_a_loop_over_pairs(tiny_model_dir):
    """The fine-tuning loss of a mean-pooled RM (one forward of every completion, each reading
    from its prompt's end) against a loop over pairs, each reward from the row alone."""
    rm, tok, _, _ = _mean_rm_and_rows(tiny_model_dir)
    comps, examples = _examples(tok, [4, 3])
    loss, _, _ = reward.batch_loss(rm, examples, tok.pad_token_id, "cpu")
    terms = []
    with torch.no_grad():
        for c, e in zip(comps, examples, strict=True):
            r = []
            for row in e.completions:
                ids = torch.tensor([row])
                r.append(rm(ids, torch.ones_like(ids), per_token=True)[0, e.prompt_len :].mean())
            pairs = [-torch.nn.functional.logsigmoid(r[w] - r[lo]) for w, lo in c.pairs()]
            terms.append(sum(pairs) / len(pairs))
    torch.testing.assert_close(loss.detach(), sum(terms) / len(terms), atol=1e-5, rtol=1e-5)


def test_head_only_mean_pooled_rm_is_saved_loaded_and_scored_alike(tiny_model_dir, tmp_path):
    """rm.pooling=mean end to end: config.json records it, the loaded model pools so, the
    demonstrations score 0 on average (the bias from the same pooling), and score_texts (shared
    prefix and plain batches) and PPO's scorer give the same rewards."""
    from instructrl.rollout import encode_response
    from instructrl.stages.ppo import reward_model_scorer

    rows = _longer_wins_rows()
    demos = [{"prompt": f"Question {i}?", "response": RESPONSES[i % 4]} for i in range(8)]
    cfg = _rm_config(
        tiny_model_dir,
        tmp_path,
        rows,
        demos,
        "head_only=true",
        "head_epochs=100",
        "val_fraction=0.25",
        "pooling=mean",
    )
    out = reward.run(cfg)
    assert json.loads((out / "config.json").read_text())["instructrl"]["pooling"] == "mean"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["rm/val_accuracy"] == 1.0
    rm = models.load_reward_model(out)
    assert rm.pooling == "mean"
    tok = models.load_tokenizer(str(out), padding_side="right")
    pairs = [(d["prompt"], d["response"]) for d in demos]
    shared = batches.score_texts(rm, tok, pairs * 2, batch_size=4, max_length=64, device="cpu")
    plain = batches.score_texts(rm, tok, pairs, batch_size=1, max_length=64, device="cpu")
    assert abs(sum(plain) / len(plain)) < 1e-5
    assert shared == pytest.approx(plain * 2, abs=1e-5)
    encoded = [encode_response(tok, q, a, max_length=64) for q, a in pairs]
    ids, attn = batches.right_pad([e[0] for e in encoded], tok.pad_token_id)
    ppo_scores = reward_model_scorer(rm)(
        ids, attn, response_start=torch.tensor([e[1] for e in encoded])
    )
    assert ppo_scores.tolist() == pytest.approx(plain, abs=1e-5)
    with pytest.raises(Exception, match=r"pooling: expected last or mean"):
        load_config(
            RMConfig, [f"model={tiny_model_dir}", f"data={tmp_path / 'c.jsonl'}", "pooling=max"]
        )


@pytest.mark.parametrize("quantize", ["none", "bf16"])
def test_rm_layers_reads_that_layer_of_the_whole_model_and_saves_a_shorter_model(
    tiny_model_dir, tmp_path, quantize
):
    """rm.layers=1 of the 2-layer tiny model, in fp32 and from bf16 features: the saved reward
    model has 1 layer in its config.json and weights, its demonstrations score 0 on average
    (the bias came from the features the head learned from), and it scores what the head
    reads of the whole SFT model's layer-1 hidden states (output_hidden_states, the final norm
    applied, mean over the response): an independent path through the untruncated model."""
    from safetensors.torch import load_file

    from instructrl.rollout import encode_response

    rows = _longer_wins_rows()
    demos = [{"prompt": f"Question {i}?", "response": RESPONSES[i % 4]} for i in range(8)]
    cfg = _rm_config(
        tiny_model_dir,
        tmp_path,
        rows,
        demos,
        "head_only=true",
        "head_epochs=50",
        "val_fraction=0.25",
        "pooling=mean",
        "layers=1",
        f"quantize={quantize}",
    )
    out = reward.run(cfg)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert not any(".layers.1." in k for k in load_file(out / "model.safetensors"))
    rm = models.load_reward_model(out)
    assert len(models.decoder_layers(rm)) == 1
    tok = models.load_tokenizer(str(out), padding_side="right")
    pairs = [(d["prompt"], d["response"]) for d in demos]
    demo_scores = batches.score_texts(rm, tok, pairs, batch_size=4, max_length=64, device="cpu")
    assert abs(sum(demo_scores) / len(demo_scores)) < 1e-5
    dtype = torch.bfloat16 if quantize == "bf16" else torch.float32
    whole = models.load_policy(str(tiny_model_dir), dtype=dtype).eval()
    head = rm.head.weight[0].detach().float()
    for q, a in [(d["prompt"], d["response"]) for d in demos[:4]]:
        ids, start = encode_response(tok, q, a, max_length=64)[:2]
        with torch.no_grad():
            h = whole(torch.tensor([ids]), output_hidden_states=True).hidden_states[1]
            h = whole.model.norm(h)[0, start:].float().mean(0)
        expected = float(h @ head) + rm.head.bias.item() + float(rm.bias)
        got = batches.score_texts(rm, tok, [(q, a)], batch_size=1, max_length=64, device="cpu")
        assert got[0] == pytest.approx(expected, abs=1e-4 if quantize == "none" else 1e-2)
    with pytest.raises(UserError, match=r"rm.layers=3: expected 1 to 2"):
        models.new_reward_model(str(tiny_model_dir), layers=3)
