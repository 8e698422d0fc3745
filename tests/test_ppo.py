"""PPO on tiny random models: rollout logprobs against a fresh forward, the ptx gradient,
a learning test on a synthetic reward, resume, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from instructrl import models, rundir, trainer
from instructrl.config import PPOConfig, load_config
from instructrl.errors import ModelNotFoundError, UserError
from instructrl.rollout import encode_prompts
from instructrl.stages import ppo

PROMPTS = [
    "Say hi.",
    "What is the capital of France? Answer in one sentence, please.",
    "List three colours",
    "Write a poem.",
]


def high_half_score(
    ids: torch.Tensor, attention: torch.Tensor, response_start=None, width: int = 8
) -> torch.Tensor:
    """Synthetic reward on the RM's (right-padded) input: the share of the last `width` real
    tokens with an id of 192 or more (the upper half of the vocabulary)."""
    out = []
    for row, mask in zip(ids, attention.bool(), strict=True):
        tail = row[mask][-width:]
        out.append((tail >= 192).float().mean())
    return torch.stack(out)


def make_trainer(tiny_model_dir, score_fn=high_half_score, accelerator=None, **over):
    args = {
        "policy": str(tiny_model_dir),
        "reward": "unused",
        "lr": 3e-3,
        "value_lr": 3e-3,
        "batch_size": 16,
        "minibatch_size": 8,
        "max_new_tokens": 8,
        "warmup_iterations": 0,
        "kl_coef": 0.01,
        "ppo_epochs": 2,
        **over,
    }
    cfg = load_config(PPOConfig, [f"{k}={v}" for k, v in args.items()])
    torch.manual_seed(0)
    tok = models.load_tokenizer(str(tiny_model_dir))
    policy = models.load_policy(str(tiny_model_dir)).train()
    ref = models.load_policy(str(tiny_model_dir)).requires_grad_(False)
    value = models.new_reward_model(str(tiny_model_dir)).train()
    ptx = []
    if cfg.ptx_coef:
        from instructrl.batches import Example

        ptx = [
            Example(tok(f"The quick brown fox number {i} jumps over the lazy dog.")["input_ids"], 0)
            for i in range(8)
        ]
    return ppo.PPOTrainer(
        cfg,
        accelerator=accelerator or trainer.make_accelerator(cfg),
        policy=policy,
        ref_policy=ref,
        value_model=value,
        tokenizer=tok,
        score_fn=score_fn,
        ptx=ptx,
    ), tok


@pytest.mark.parametrize("quantize", ["none", "bf16", "int8"])
def test_rollout_logprobs_equal_a_fresh_forward(tiny_model_dir, quantize):
    """Whatever the engine, the old logprobs are the training model's (the sampler's own logits
    for the exact engine; one forward pass after a bf16 or int8 engine, whose gap is measured)."""
    t, tok = make_trainer(
        tiny_model_dir, temperature=0.7, ptx_coef=0, **{"rollout.quantize": quantize}
    )
    ids = encode_prompts(tok, PROMPTS)
    assert len({len(x) for x in ids}) > 1  # prompts of different lengths: real left padding
    r = t.sample(ids, seed=0)
    t.evaluate(r)
    T = r.response_mask.shape[1]
    for b, prompt in enumerate(ids):
        n = int(r.response_mask[b].sum())
        seq = torch.tensor([prompt + r.input_ids[b, r.prompt_width : r.prompt_width + n].tolist()])
        with torch.no_grad():
            logits = (
                models.unwrap(t.policy)(seq).logits[0, len(prompt) - 1 : len(prompt) - 1 + n] / 0.7
            )
        expected = (
            torch.log_softmax(logits, -1)
            .gather(-1, seq[0, len(prompt) :].unsqueeze(-1))
            .squeeze(-1)
        )
        torch.testing.assert_close(r.logprobs[b, :n], expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            r.ref_logprobs[b, :n], expected, atol=1e-4, rtol=0
        )  # policy == reference at start
        assert n == T or r.ended[b]  # a short response ended with EOS
    assert r.values.shape == r.logprobs.shape == (len(ids), T)
    if quantize == "none":
        assert r.engine_logprobs is None and ppo.logprob_gap(r) == 0.0
    else:  # the bf16 / int8 sampler is close to, not equal to, the training model
        gap = ppo.logprob_gap(r)
        assert 0 < gap < 0.05, gap
        by_hand = (r.logprobs - r.engine_logprobs).abs()[r.response_mask].mean().item()
        assert gap == pytest.approx(by_hand)


def test_reference_computes_under_the_policys_autocast(tiny_model_dir):
    """Under mixed precision (bf16 autocast, as accelerate sets up on a GPU; here on the CPU)
    the prepared policy's forward runs under autocast, so the reference must too: KL exactly 0
    before any update. Without it the reference computed in fp32 (KL 1e-3 on an H200)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        acc = Accelerator(cpu=True, mixed_precision="bf16")
        assert acc.native_amp
        t, tok = make_trainer(tiny_model_dir, accelerator=acc, ptx_coef=0)
        r = t.sample(encode_prompts(tok, PROMPTS), seed=0)
        t.evaluate(r)
        mask = r.response_mask
        assert torch.equal(r.logprobs[mask], r.ref_logprobs[mask])
        # the autocast matters here: the same reference in fp32 gives other numbers
        fp32 = models.load_policy(str(tiny_model_dir)).requires_grad_(False)
        T = mask.shape[1]
        with torch.no_grad():
            lp32 = ppo.response_logprobs(
                fp32, r.input_ids, r.attention, r.prompt_width, T, t.cfg.temperature
            )[0]
        assert (lp32[mask] - r.ref_logprobs[mask]).abs().max() > 1e-5
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_ptx_gradient_is_gamma_times_nll_gradient(tiny_model_dir):
    t, tok = make_trainer(tiny_model_dir, ptx_coef=2.5)
    r = t.sample(encode_prompts(tok, PROMPTS), seed=1)
    t.evaluate(r)
    advantages, _, _, _ = t.advantages(r)
    idx = torch.arange(len(PROMPTS))
    import random

    batch = t.ptx_batch(random.Random(0))
    params = [p for p in t.policy.parameters() if p.requires_grad]

    def grads(loss):
        return torch.autograd.grad(loss, params, allow_unused=True)

    with_ptx = grads(t.policy_objective(r, idx, advantages, batch)[0])
    pure_loss, _ = t.policy_objective(r, idx, advantages, None)
    from instructrl import losses

    expected_pure, _ = losses.policy_loss(
        logprobs=ppo.response_logprobs(
            t.policy, r.input_ids, r.attention, r.prompt_width, r.response_mask.shape[1], 1.0
        )[0],
        old_logprobs=r.logprobs,
        advantages=advantages,
        mask=r.response_mask,
        clip=0.2,
    )
    assert pure_loss.item() == pytest.approx(
        expected_pure.item(), abs=1e-6
    )  # gamma_ptx = 0: the pure PPO loss
    pure = grads(pure_loss)
    from instructrl.batches import nll_loss

    nll = grads(nll_loss(t.policy, *batch)[0])
    for g_ptx, g_pure, g_nll in zip(with_ptx, pure, nll, strict=True):
        if g_ptx is None:
            continue
        torch.testing.assert_close(g_ptx - g_pure, 2.5 * g_nll, atol=1e-5, rtol=1e-4)


def test_mean_reward_rises_on_a_synthetic_reward(tiny_model_dir):
    t, tok = make_trainer(tiny_model_dir, ptx_coef=0)
    ids = encode_prompts(tok, [f"Question {i}: say something." for i in range(16)])
    scores, kls = [], []
    for _ in range(25):
        stats, _ = t.step(ids)
        scores.append(stats["score"])
        kls.append(stats["kl"])
    start, end = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert end > start + 0.2, f"mean reward {start:.2f} -> {end:.2f}"
    assert all(abs(k) < 50 for k in kls)


def test_nan_reward_stops_with_the_iteration(tiny_model_dir):
    t, tok = make_trainer(
        tiny_model_dir,
        ptx_coef=0,
        score_fn=lambda ids, attn, **_: torch.full((ids.shape[0],), float("nan")),
    )
    with pytest.raises(UserError, match=r"iteration 1: the reward model returned NaN or inf"):
        t.step(encode_prompts(tok, PROMPTS))


def _stage_cfg(tiny_model_dir, rm_dir, tmp_path, out, **over):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS * 2))
    )
    args = {
        "policy": tiny_model_dir,
        "reward": rm_dir,
        "prompts": prompts,
        "out": out,
        "batch_size": 4,
        "minibatch_size": 2,
        "max_new_tokens": 6,
        "iterations": 4,
        "checkpoint_every": 2,
        "ptx_length": 16,
        "lr": 1e-3,
        **over,
    }
    return load_config(PPOConfig, [f"{k}={v}" for k, v in args.items()])


def _straight_and_resumed(tiny_model_dir, rm_dir, tmp_path, monkeypatch, *, kill_at, **over):
    """A straight stage run, and one killed in iteration `kill_at` then resumed."""
    straight = ppo.run(_stage_cfg(tiny_model_dir, rm_dir, tmp_path, tmp_path / "a", **over))
    original = ppo.PPOTrainer.step
    calls = {"n": 0}

    def killed(self, prompt_ids):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt("killed")
        return original(self, prompt_ids)

    monkeypatch.setattr(ppo.PPOTrainer, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        ppo.run(_stage_cfg(tiny_model_dir, rm_dir, tmp_path, tmp_path / "b", **over))
    monkeypatch.setattr(ppo.PPOTrainer, "step", original)
    resumed = ppo.run(
        _stage_cfg(tiny_model_dir, rm_dir, tmp_path, tmp_path / "b", resume=True, **over)
    )
    return straight, resumed


def test_stage_resume_matches_straight_run_and_reloads(
    tiny_model_dir, rm_dir, tmp_path, monkeypatch
):
    straight, resumed = _straight_and_resumed(
        tiny_model_dir, rm_dir, tmp_path, monkeypatch, kill_at=3
    )
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-6, f"resumed vs straight: max abs weight diff {diff:.3g}"
    rows = rundir.read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("ppo/ptx_loss" in r for r in rows)
    episodes = [
        (r["step"], r["prompt_id"]) for r in rundir.read_metrics(resumed / "rollouts.jsonl")
    ]
    straight_episodes = rundir.read_metrics(straight / "rollouts.jsonl")
    assert episodes == [(r["step"], r["prompt_id"]) for r in straight_episodes]
    assert [s for s, _ in episodes] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4  # no duplicates
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(resumed)  # a plain HF policy
    models.load_reward_model(resumed / "value")  # a reward-model directory
    card = (resumed / "README.md").read_text()  # model cards, as the hub expects
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation")
    assert f"- Base model: `{tiny_model_dir}`" in card and "| ppo/kl |" in card
    assert "an instructrl PPO value model" in (resumed / "value" / "README.md").read_text()


def test_a_foreign_sequence_classifier_drives_ppo(tiny_model_dir, tmp_path):
    """Any *ForSequenceClassification directory with one label (TRL's RewardTrainer writes
    these) is a reward model: PPO's scores are its logits on the rollouts."""
    from test_reward import assert_hf_logits_equal
    from transformers import LlamaForSequenceClassification

    policy = models.load_policy(str(tiny_model_dir))
    config = type(policy.config).from_dict(policy.config.to_dict())
    config.num_labels, config.pad_token_id = 1, 0  # <|endoftext|>: never inside a scored text
    torch.manual_seed(3)
    foreign = LlamaForSequenceClassification(config)
    foreign.save_pretrained(tmp_path / "foreign")
    tok = models.load_tokenizer(str(tiny_model_dir))
    tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(tmp_path / "foreign")
    out = ppo.run(
        _stage_cfg(
            tiny_model_dir,
            tmp_path / "foreign",
            tmp_path,
            tmp_path / "f",
            iterations=1,
            ptx="none",
            max_new_tokens=12,
        )
    )
    rows = rundir.read_metrics(out / "rollouts.jsonl")
    for r in rows:
        r["prompt"] = (PROMPTS * 2)[int(r["prompt_id"][1:])]
    samples = tmp_path / "episodes.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_hf_logits_equal(tmp_path / "foreign", samples, [r["score"] for r in rows])
    value = json.loads((out / "value" / "config.json").read_text())
    assert (
        value["architectures"] == ["LlamaForSequenceClassification"] and len(value["id2label"]) == 1
    )


def test_lora_reference_is_the_adapter_disabled_base(tiny_model_dir, rm_dir, tmp_path):
    out = ppo.run(
        _stage_cfg(
            tiny_model_dir,
            rm_dir,
            tmp_path,
            tmp_path / "l",
            **{"lora.r": 4, "iterations": 2, "ptx": "none"},
        )
    )
    rows = rundir.read_metrics(out / "metrics.jsonl")
    assert (
        abs(rows[0]["ppo/kl"]) < 1e-4
    )  # first rollout: policy == base, so KL to the reference is 0
    assert "ppo/ptx_loss" not in rows[0]


def test_reward_model_with_another_tokenizer_is_refused(tiny_model_dir, rm_dir, tmp_path):
    other = tmp_path / "other"
    from instructrl.testing import make_tiny_model

    make_tiny_model(other)
    tok = models.load_tokenizer(str(other))
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(other)
    with pytest.raises(ModelNotFoundError, match="use different tokenizers"):
        ppo.run(_stage_cfg(tiny_model_dir, other, tmp_path, tmp_path / "x"))


def test_prompts_longer_than_the_context(tiny_model_dir, rm_dir, tmp_path):
    with pytest.raises(UserError, match="every prompt is longer than max_prompt_tokens=4"):
        ppo.run(_stage_cfg(tiny_model_dir, rm_dir, tmp_path, tmp_path / "y", max_prompt_tokens=4))


def test_tis_weights_reach_the_loss(tiny_model_dir):
    """rollout.tis_cap: weights min(pi_old / pi_engine, cap) from the int8 engine's logprobs."""
    t, tok = make_trainer(
        tiny_model_dir, ptx_coef=0, **{"rollout.quantize": "int8", "rollout.tis_cap": 1.001}
    )
    r = t.sample(encode_prompts(tok, PROMPTS), seed=1)
    t.evaluate(r)
    expected = torch.where(
        r.response_mask, torch.exp(r.logprobs - r.engine_logprobs), torch.ones_like(r.logprobs)
    ).clamp(max=1.001)
    torch.testing.assert_close(r.is_weights, expected)
    assert (r.is_weights[r.response_mask] == 1.001).any()  # the cap acts somewhere
    advantages, _, _, _ = t.advantages(r)
    idx = torch.arange(len(PROMPTS))
    weighted, _ = t.policy_objective(r, idx, advantages, None)
    r.is_weights = None
    plain, _ = t.policy_objective(r, idx, advantages, None)
    assert weighted.item() != pytest.approx(plain.item(), abs=1e-7)


def test_rm_scores_exactly_the_sequences_it_was_trained_on(tiny_model_dir):
    """A response cut off at the length limit has no EOS in the RM's training comparisons and in
    PPO's scoring alike; ended responses (EOS or stop string) have one in both."""
    from instructrl.records import Comparison
    from instructrl.rollout import Generation
    from instructrl.stages.reward import encode_comparisons

    seen = []

    starts = []

    def capture(ids, attn, response_start=None):
        seen.extend(row[mask.bool()].tolist() for row, mask in zip(ids, attn, strict=True))
        starts.extend(response_start.tolist())
        return torch.zeros(ids.shape[0])

    t, tok = make_trainer(tiny_model_dir, score_fn=capture, ptx_coef=0, max_new_tokens=16)
    eos = tok.eos_token_id
    texts = ["Paris is the capital.", "The quick brown fox jumps", "red, green"]
    ids = [tok(x, add_special_tokens=False)["input_ids"] for x in texts]
    generations = [
        Generation(texts[0], [*ids[0], eos], "eos", 0),
        Generation(texts[1], ids[1], "length", 0),
        Generation(texts[2], [*ids[2], *ids[0]], "stop", 0),  # cut at a stop string
    ]
    prompt = "List three colours"
    prompt_ids = encode_prompts(tok, [prompt] * 3)
    r = t._rollout(prompt_ids, generations, with_logprobs=False)
    t.evaluate(r)
    comparison = Comparison(
        prompt=prompt,
        responses=texts,
        ranking=[0, 1, 2],
        finish_reasons=["eos", "length", "stop"],
    )
    examples, _ = encode_comparisons(tok, [comparison], max_length=256, where="test")
    assert seen == r.scored == examples[0].completions
    p = len(prompt_ids[0])
    assert starts == [p] * 3 == [examples[0].prompt_len] * 3  # where a mean-pooled RM reads from
    assert r.scored[0][p:] == [*ids[0], eos]  # the sampled tokens, EOS included
    assert r.scored[1][p:] == ids[1]  # cut off: no EOS
    assert r.scored[2][p:] == [*ids[2], eos]  # stopped: ends there
    assert r.finish_reasons == ["eos", "length", "stop"]
    assert r.ended.tolist() == [True, False, True]


def test_finish_reasons_match_the_sampled_tokens(tiny_model_dir):
    t, tok = make_trainer(tiny_model_dir, ptx_coef=0, max_new_tokens=6)
    with torch.no_grad():  # make EOS likely, so that some responses end and some are cut off
        models.unwrap(t.policy).get_output_embeddings().weight[tok.eos_token_id] *= 6
    r = t.sample(encode_prompts(tok, PROMPTS * 4), seed=0)
    T = r.response_mask.shape[1]
    reasons = set()
    for b, reason in enumerate(r.finish_reasons):
        n = int(r.response_mask[b].sum())
        tokens = r.input_ids[b, r.prompt_width : r.prompt_width + n].tolist()
        has_eos = tok.eos_token_id in tokens
        assert reason == ("eos" if has_eos else "length"), (reason, tokens)
        assert has_eos or n == T
        reasons.add(reason)
    assert reasons == {"eos", "length"}


def test_no_dropout_module_is_active_in_rl(tmp_path, rm_dir):
    """A policy saved with attention dropout (SFT's `dropout`) is deterministic in PPO's train
    mode: the modules' own dropout is off, not only the config's."""
    from instructrl.testing import make_tiny_model

    path = make_tiny_model(tmp_path / "dropout")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
    loaded = models.load_policy(str(path)).train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    torch.manual_seed(0)
    assert not torch.equal(loaded(ids).logits, loaded(ids).logits)  # dropout acts when built
    policy = ppo._no_dropout(loaded)
    value = ppo._no_dropout(models.load_reward_model(rm_dir)).train()
    for model in (policy, value):
        for module in model.modules():
            assert getattr(module, "p", 0.0) == 0.0 or not isinstance(module, torch.nn.Dropout)
            assert getattr(module, "attention_dropout", 0.0) == 0.0
    assert torch.equal(policy(ids).logits, policy(ids).logits)


def test_ema_weights_survive_a_kill_and_resume(tiny_model_dir, rm_dir, tmp_path, monkeypatch):
    straight, resumed = _straight_and_resumed(
        tiny_model_dir, rm_dir, tmp_path, monkeypatch, kill_at=4, ema_decay=0.5, ptx="none"
    )
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    # the output is the EMA, not the last weights: a run without EMA ends elsewhere
    plain = ppo.run(_stage_cfg(tiny_model_dir, rm_dir, tmp_path, tmp_path / "c", ptx="none"))
    c = load_file(plain / "model.safetensors")
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-4


def test_minibatches_and_epochs_clip(tiny_model_dir):
    """With minibatch < batch and 2 epochs, later gradient steps see a moved policy: the ratio
    leaves 1 and clipping acts (with one minibatch and one epoch it never can)."""
    t, tok = make_trainer(tiny_model_dir, ptx_coef=0, lr=1e-2)
    ids = encode_prompts(tok, [f"Question {i}: say something." for i in range(16)])
    stats, _ = t.step(ids)
    assert stats["clip_frac"] > 0
    t1, _ = make_trainer(tiny_model_dir, ptx_coef=0, lr=1e-2, minibatch_size=16, ppo_epochs=1)
    stats1, _ = t1.step(ids)
    assert stats1["clip_frac"] == 0


def _trunk_calls(monkeypatch) -> list[int]:
    """The layer count of every models.trunk_hidden call from now on (one per rollout batch)."""
    calls = []
    original = models.trunk_hidden
    monkeypatch.setattr(
        models, "trunk_hidden", lambda *a, **k: calls.append(a[-1]) or original(*a, **k)
    )
    return calls


def test_shared_trunk_trains_the_same_models(tiny_model_dir, rm_dir, tmp_path, monkeypatch):
    """freeze_layers=1: policy, reference and value model (from the RM, itself the tiny model
    plus a head) run their common bottom layer once per batch, with the same result as three
    whole forwards."""
    calls = _trunk_calls(monkeypatch)
    runs = {}
    for share in (False, True):
        out = tmp_path / f"share-{share}"
        ppo.run(
            _stage_cfg(
                tiny_model_dir,
                rm_dir,
                tmp_path,
                out,
                freeze_layers=1,
                share_trunk=share,
                ptx="none",
                iterations=3,
            )
        )
        runs[share] = out
        assert len(calls) == (3 if share else 0)  # one trunk per rollout batch
    assert calls == [1, 1, 1]
    for name in ("model.safetensors", "value/model.safetensors"):
        a, b = load_file(runs[False] / name), load_file(runs[True] / name)
        assert a.keys() == b.keys()
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff < 1e-5, f"{name}: max abs diff {diff:.3g}"
    a, b = (rundir.read_metrics(runs[s] / "metrics.jsonl") for s in (False, True))
    for key in ("ppo/score", "ppo/kl", "ppo/policy_loss", "ppo/value_loss", "ppo/clip_frac"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-4), key


def test_value_model_from_a_shortened_rm_shares_all_its_layers(tmp_path, monkeypatch):
    """A 4-layer policy with freeze_layers=3 and an RM shortened to 2 layers (rm.layers): the
    value model, from that RM, keeps its 2 layers frozen (the SFT model's weights, saved
    unchanged) and trains its norm and head; policy, reference and value share a trunk of 2
    layers, with the same results as three whole forwards."""
    from instructrl.testing import make_tiny_model

    policy = make_tiny_model(tmp_path / "policy", seed=0, layers=4)
    torch.manual_seed(0)
    rm = models.new_reward_model(str(policy), layers=2)
    rm_dir = tmp_path / "rm"
    models.save_reward_model(rm, models.load_tokenizer(str(policy)), rm_dir, bias=0.0)
    calls = _trunk_calls(monkeypatch)
    runs = {}
    for share in (False, True):
        out = tmp_path / f"share-{share}"
        ppo.run(
            _stage_cfg(
                policy,
                rm_dir,
                tmp_path,
                out,
                freeze_layers=3,
                share_trunk=share,
                ptx="none",
                iterations=2,
            )
        )
        runs[share] = out
    assert calls == [2, 2]  # one trunk of the value model's 2 layers per rollout batch
    before = load_file(rm_dir / "model.safetensors")
    value = load_file(runs[True] / "value/model.safetensors")
    assert json.loads((runs[True] / "value/config.json").read_text())["num_hidden_layers"] == 2
    for k in before:
        if ".layers." in k or "embed_tokens" in k:
            assert torch.equal(before[k], value[k]), k
    assert not torch.equal(before["score.weight"], value["score.weight"])
    for name in ("model.safetensors", "value/model.safetensors"):
        a, b = load_file(runs[False] / name), load_file(runs[True] / name)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff < 1e-5, f"{name}: max abs diff {diff:.3g}"
