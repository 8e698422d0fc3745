"""losses.py against hand-computed values and independent Python loops."""

from __future__ import annotations

import math
import random

import pytest
import torch

from instructrl import losses

T, F = True, False


def test_masked_mean_ignores_inf_padding():
    values = torch.tensor([[1.0, 3.0, float("inf")]])
    mask = torch.tensor([[T, T, F]])
    assert losses.masked_mean(values, mask).item() == 2.0
    with pytest.raises(ValueError, match="one shape"):
        losses.masked_mean(torch.zeros(2, 3), torch.ones(2, 1, dtype=torch.bool))


def test_gae_two_steps_by_hand():
    # gamma = lam = 1: A_1 = 1 - 0.25 = 0.75; A_0 = (0 + 0.25 - 0.5) + 0.75 = 0.5
    adv, ret = losses.gae(
        rewards=torch.tensor([[0.0, 1.0]]),
        values=torch.tensor([[0.5, 0.25]]),
        mask=torch.ones(1, 2, dtype=torch.bool),
        gamma=1.0,
        lam=1.0,
    )
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.75]]))
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0]]))


def gae_loop(rewards, values, mask, gamma, lam):
    """Reference: per row, over the real tokens only, the textbook recursion."""
    out = torch.zeros_like(values)
    for b in range(values.shape[0]):
        idx = [t for t in range(values.shape[1]) if mask[b, t]]
        last_adv, next_v = 0.0, 0.0
        for t in reversed(idx):
            delta = rewards[b, t].item() + gamma * next_v - values[b, t].item()
            last_adv = delta + gamma * lam * last_adv
            out[b, t] = last_adv
            next_v = values[b, t].item()
    return out


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_loop_with_padding(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    lengths = [7, 3, 1, 5]
    mask = torch.tensor([[t < n for t in range(7)] for n in lengths])
    rewards = torch.where(
        mask, rewards, torch.full_like(rewards, float("nan"))
    )  # padding may hold anything
    adv, ret = losses.gae(rewards=rewards, values=values, mask=mask, gamma=gamma, lam=lam)
    torch.testing.assert_close(
        adv, gae_loop(torch.nan_to_num(rewards), values, mask, gamma, lam), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(ret, torch.where(mask, adv + values, torch.zeros_like(adv)))


def test_whiten_with_mask_by_hand():
    # real entries 1, 3: mean 2, population std 1 -> -1, 1; the padded entry becomes 0
    out = losses.whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[T, T, F]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)
    out = losses.whiten(
        torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[T, T, F]]), shift_mean=False
    )
    torch.testing.assert_close(out, torch.tensor([[1.0, 3.0, 0.0]]), atol=1e-4, rtol=0)


def test_kl_rewards_by_hand():
    # beta 0.1; KL per token [0.5, -0.2, (pad)]; score 2 lands on the last real token
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.8, float("-inf")]])
    mask = torch.tensor([[T, T, F]])
    rewards, kl = losses.kl_rewards(
        logprobs=logp, ref_logprobs=ref, scores=torch.tensor([2.0]), mask=mask, beta=0.1
    )
    torch.testing.assert_close(kl, torch.tensor([[0.5, -0.2, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.02 + 2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"scores must be \(B,\)"):
        losses.kl_rewards(
            logprobs=logp, ref_logprobs=ref, scores=torch.tensor([[2.0]]), mask=mask, beta=0.1
        )


def test_kl_estimators_by_hand():
    # d = log pi - log pi_ref = [0.5, -0.2]: k1 = d; k2 = d^2 / 2 = [0.125, 0.02];
    # k3 = e^-d - 1 + d = [e^-0.5 - 0.5, e^0.2 - 1.2] = [0.10653066, 0.02140276]
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.8]])
    torch.testing.assert_close(losses.kl_estimate(logp, ref, "k1"), torch.tensor([[0.5, -0.2]]))
    torch.testing.assert_close(losses.kl_estimate(logp, ref, "k2"), torch.tensor([[0.125, 0.02]]))
    torch.testing.assert_close(
        losses.kl_estimate(logp, ref, "k3"), torch.tensor([[0.10653066, 0.02140276]])
    )
    rewards, kl = losses.kl_rewards(
        logprobs=logp,
        ref_logprobs=ref,
        scores=torch.tensor([1.0]),
        mask=torch.tensor([[T, T]]),
        beta=0.1,
        estimator="k2",
    )
    torch.testing.assert_close(kl, torch.tensor([[0.125, 0.02]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.0125, -0.002 + 1.0]]))
    with pytest.raises(ValueError, match="kl estimator must be one of"):
        losses.kl_estimate(logp, ref, "k4")


def test_policy_loss_by_hand():
    # ratio e^0.5 = 1.6487 > 1.2 with A = 1: clipped term -1.2 is the max -> loss -1.2, clipped
    # ratio e^-0.5 = 0.6065 with A = 1: unclipped -0.6065 vs clipped -0.8 -> -0.6065, not clipped
    loss, stats = losses.policy_loss(
        logprobs=torch.tensor([[0.5, -0.5]]),
        old_logprobs=torch.zeros(1, 2),
        advantages=torch.ones(1, 2),
        mask=torch.ones(1, 2, dtype=torch.bool),
        clip=0.2,
    )
    assert loss.item() == pytest.approx((-1.2 - math.exp(-0.5)) / 2, abs=1e-6)
    assert stats["clip_frac"].item() == 0.5
    assert stats["approx_kl"].item() == pytest.approx(0.125, abs=1e-6)


def test_value_loss_by_hand():
    # old 0, new 1, return 2, clip 0.2: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 0.5 * 3.24
    loss, stats = losses.value_loss(
        values=torch.tensor([[1.0]]),
        old_values=torch.tensor([[0.0]]),
        returns=torch.tensor([[2.0]]),
        mask=torch.ones(1, 1, dtype=torch.bool),
        clip=0.2,
    )
    assert loss.item() == pytest.approx(1.62, abs=1e-6) and stats["value_clip_frac"].item() == 1.0


def test_policy_loss_matches_a_loop():
    rng = random.Random(0)
    logp = torch.tensor([[rng.gauss(0, 0.3) for _ in range(5)] for _ in range(3)])
    old = torch.tensor([[rng.gauss(0, 0.3) for _ in range(5)] for _ in range(3)])
    adv = torch.tensor([[rng.gauss(0, 1) for _ in range(5)] for _ in range(3)])
    mask = torch.tensor([[t < n for t in range(5)] for n in (5, 2, 4)])
    loss, _ = losses.policy_loss(
        logprobs=logp, old_logprobs=old, advantages=adv, mask=mask, clip=0.2
    )
    terms = []
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                r = math.exp(logp[b, t].item() - old[b, t].item())
                a = adv[b, t].item()
                terms.append(max(-a * r, -a * min(max(r, 0.8), 1.2)))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-6)


def test_adaptive_kl_by_hand():
    # KL 12 vs target 6: error clipped to 0.2; beta 0.1 * (1 + 0.2 * 100 / 1000) = 0.102
    kl = losses.AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert kl.update(12.0, n_steps=100) == pytest.approx(0.102)
    # KL 5.4: error -0.1 -> 0.102 * (1 - 0.1 * 100 / 1000) = 0.10098
    assert kl.update(5.4, n_steps=100) == pytest.approx(0.10098)
    assert losses.FixedKLController(0.02).update(100.0, 10) == 0.02


def test_entropy_and_explained_variance():
    assert losses.entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4), abs=1e-6)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    assert losses.explained_variance(values=ret, returns=ret, mask=mask).item() == pytest.approx(
        1.0
    )
    assert losses.explained_variance(
        values=torch.zeros(1, 3), returns=ret, mask=mask
    ).item() == pytest.approx(0.0, abs=1e-6)


def test_nll_loss_by_hand():
    # uniform logits over 4 tokens: -log(1/4) each
    loss, stats = losses.nll_loss(logits=torch.zeros(3, 4), labels=torch.tensor([0, 1, 3]))
    assert loss.item() == pytest.approx(math.log(4)) and stats["tokens"].item() == 3


def test_ptx_loss_by_hand():
    # two pretraining tokens over a vocabulary of 2 with logits (0, 0): each log p = -log 2,
    # so NLL = log 2 and loss = 0.5 + gamma * log 2 = 0.5 + 3 * 0.6931...
    policy_loss = torch.tensor(0.5)
    logits = torch.zeros(2, 2)
    labels = torch.tensor([0, 1])
    loss, stats = losses.ptx_loss(
        policy_loss=policy_loss, ptx_logits=logits, ptx_labels=labels, ptx_coef=3.0
    )
    assert loss.item() == pytest.approx(0.5 + 3 * math.log(2), abs=1e-6)
    assert stats["ptx_loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    # gamma = 0 is plain PPO; a confident correct prediction adds almost nothing
    assert losses.ptx_loss(
        policy_loss=policy_loss, ptx_logits=logits, ptx_labels=labels, ptx_coef=0.0
    )[0].item() == pytest.approx(0.5)
    sure = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert losses.ptx_loss(
        policy_loss=policy_loss, ptx_logits=sure, ptx_labels=labels, ptx_coef=27.8
    )[0].item() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="scalar policy_loss"):
        losses.ptx_loss(
            policy_loss=torch.zeros(2), ptx_logits=logits, ptx_labels=labels, ptx_coef=1.0
        )


def test_tis_weights_and_weighted_policy_loss_by_hand():
    # log pi_old - log pi_engine = (0, log 2, log 4) -> ratios 1, 2, 4, capped at 3; padding 1
    logprobs = torch.tensor([[-1.0, -1.0, -1.0, 0.0]])
    engine = torch.tensor([[-1.0, -1.0 - math.log(2), -1.0 - math.log(4), 5.0]])
    mask = torch.tensor([[T, T, T, F]])
    w = losses.tis_weights(logprobs=logprobs, engine_logprobs=engine, mask=mask, cap=3.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0, 3.0, 1.0]]))
    # ratio 1 everywhere (logprobs == old): per-token loss -A; weighted mean over 3 real tokens
    # = -(1 * 1 + 2 * 2 + 3 * (-1)) / 3 = -2 / 3
    adv = torch.tensor([[1.0, 2.0, -1.0, 9.0]])
    loss, _ = losses.policy_loss(
        logprobs=logprobs, old_logprobs=logprobs, advantages=adv, mask=mask, clip=0.2, is_weights=w
    )
    assert loss.item() == pytest.approx(-2 / 3)


def test_whiten_with_the_whole_batch_moments_equals_whitening_the_whole_batch():
    """Two processes each whitening their half with the moments of both halves (what PPO does
    under several processes) give what one process gives on the whole batch."""
    torch.manual_seed(0)
    values = torch.randn(6, 5) * 3 + 1
    mask = torch.rand(6, 5) > 0.3
    whole = losses.whiten(values, mask)
    x = values[mask].double()
    moments = (x.mean().item(), x.var(unbiased=False).item())
    halves = [losses.whiten(values[i : i + 3], mask[i : i + 3], moments=moments) for i in (0, 3)]
    torch.testing.assert_close(torch.cat(halves), whole, atol=1e-5, rtol=0)
    own = losses.whiten(values[:3], mask[:3])  # a half's own moments differ
    assert not torch.allclose(own, whole[:3], atol=1e-3)


def test_losses_over_a_shared_token_count_average_to_the_whole_minibatch():
    """Two processes' parts of a minibatch (3 and 1 response tokens), each dividing its sum by
    the global count / 2: the mean of their losses (and of their gradients, which DDP takes) is
    the whole minibatch's token mean, where the mean of their own token means is not."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    logp = torch.randn(2, 3, requires_grad=True)
    kw = dict(old_logprobs=torch.randn(2, 3), advantages=torch.randn(2, 3), clip=0.2)
    whole, _ = losses.policy_loss(logprobs=logp, mask=mask, **kw)
    (g_whole,) = torch.autograd.grad(whole, logp)

    def part(i: int, tokens: float | None) -> torch.Tensor:  # process i's loss on its row
        rows = slice(i, i + 1)
        return losses.policy_loss(
            logprobs=logp[rows],
            mask=mask[rows],
            old_logprobs=kw["old_logprobs"][rows],
            advantages=kw["advantages"][rows],
            clip=0.2,
            tokens=tokens,
        )[0]

    parts = [part(i, tokens=4 / 2) for i in range(2)]
    shared = (parts[0] + parts[1]) / 2
    assert shared.item() == pytest.approx(whole.item(), abs=1e-6)
    (g_shared,) = torch.autograd.grad(shared, logp)
    torch.testing.assert_close(g_shared, g_whole)
    own = [part(i, tokens=None) for i in range(2)]
    assert abs((own[0] + own[1]).item() / 2 - whole.item()) > 1e-3
    v = dict(values=torch.randn(2, 3), old_values=torch.randn(2, 3), returns=torch.randn(2, 3))
    v_whole = losses.value_loss(mask=mask, clip=0.5, **v)[0]
    v_parts = [
        losses.value_loss(
            mask=mask[i : i + 1], clip=0.5, tokens=2.0, **{k: t[i : i + 1] for k, t in v.items()}
        )[0]
        for i in range(2)
    ]
    assert ((v_parts[0] + v_parts[1]) / 2).item() == pytest.approx(v_whole.item(), abs=1e-6)
