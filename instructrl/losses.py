"""Pure math of the loop: no configs, files, loggers or process groups (style.md, section 2).

Letters: B batch, T tokens, V vocabulary, N selected positions, K responses per prompt.
Masks are bool, True on real tokens. Masking uses `torch.where`, never multiplication, so
padding that holds inf or nan cannot leak into a result. Every loss returns
`(loss, stats)` with stats detached.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of one shape, got {shapes}")


def masked_sum(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Sum of values where mask is True. values, mask: same shape."""
    _same_shape(values=values, mask=mask)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    masked = torch.where(mask, values, zeros)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean of values where mask is True (0 where nothing is selected)."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def _token_mean(values: Tensor, mask: Tensor, tokens: float | None) -> Tensor:
    """masked_mean, or the masked sum over `tokens` when given."""
    if tokens is None:
        return masked_mean(values, mask)
    return masked_sum(values, mask) / max(tokens, 1e-8)


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """log p(label) under logits.  logits: (..., V) float; labels: (...) long -> (...) float.

    log_softmax in float32 then a gather; equals `-cross_entropy(reduction="none")`.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def nll_loss(*, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean negative log-likelihood over N selected tokens (the SFT and ptx loss).

    logits: (N, V) for the positions that predict `labels` (N,), e.g. response tokens only.
    loss = -1/N * sum_i log p(labels_i).
    """
    if logits.ndim != 2 or labels.ndim != 1:
        raise ValueError(
            f"expected logits (N, V) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if labels.numel() == 0:
        raise ValueError("nll_loss: no tokens selected (every response was masked out)")
    logprobs = token_logprobs(logits, labels)  # (N,)
    loss = -logprobs.mean()
    return loss, {"loss": loss.detach(), "tokens": torch.tensor(labels.numel())}


def ranking_loss(
    *, rewards: Tensor, ranks: Tensor, valid: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """InstructGPT RM loss over all pairs of each prompt's K responses (paper, eq. 1).

    rewards: (B, K) float, one scalar per completion from a single forward pass each;
    ranks: (B, K) int, 0 = best, equal ranks are ties (left out, as in the paper);
    valid: (B, K) bool, False where a prompt has fewer than K responses.
    loss = mean over prompts of -1/P_b * sum_{w ranked above l} log sigmoid(r_w - r_l), where
    P_b is the prompt's number of untied pairs (C(K_b, 2) when nothing is tied).
    Stats: pairwise accuracy (r_w > r_l), the number of pairs, the mean reward margin.
    """
    _same_shape(rewards=rewards, ranks=ranks, valid=valid)
    diff = rewards[:, :, None] - rewards[:, None, :]  # (B, K, K): r_i - r_j
    pair = (
        (ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    )  # i ranked above j
    n_pairs = pair.sum(dim=(1, 2))  # (B,)
    per_prompt = masked_sum(
        -torch.nn.functional.logsigmoid(diff), pair, dim=(1, 2)
    ) / n_pairs.clamp(min=1)
    has_pairs = n_pairs > 0
    if not bool(has_pairs.any()):
        raise ValueError("ranking_loss: no untied pairs in the batch")
    loss = per_prompt[has_pairs].mean()
    stats = {
        "loss": loss.detach(),
        "accuracy": masked_mean((diff > 0).float(), pair).detach(),
        "pairs": n_pairs.sum().detach(),
        "margin": masked_mean(diff, pair).detach(),
    }
    return loss, stats


# ----------------------------------------------------------------------------- PPO
def whiten(
    values: Tensor,
    mask: Tensor,
    *,
    shift_mean: bool = True,
    moments: tuple[float, float] | None = None,
) -> Tensor:
    """(values - mean) / std over the masked entries (population variance, as in
    lm-human-preferences); masked-out entries are returned as 0. values, mask: (B, T).
    `moments`: (mean, variance) of a larger batch these rows are part of (e.g. over every
    process's rollouts), instead of this batch's own."""
    _same_shape(values=values, mask=mask)
    if moments is None:
        mean = masked_mean(values, mask)
        var = masked_mean((values - mean) ** 2, mask)
    else:
        mean, var = (torch.tensor(m, dtype=values.dtype, device=values.device) for m in moments)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask, out, torch.zeros_like(out))


KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (Schulman, "Approximating
    KL divergence"), with d = log pi(y_t) - log pi_ref(y_t), all (B, T):
    k1 = d (the paper's; unbiased, can be negative), k2 = d^2 / 2 (biased, >= 0),
    k3 = exp(-d) - 1 + d (unbiased, >= 0)."""
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def kl_rewards(
    *,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    scores: Tensor,
    mask: Tensor,
    beta: float,
    estimator: str = "k1",
) -> tuple[Tensor, Tensor]:
    """Per-token rewards R_t = -beta * KL_t, with KL_t = log pi(y_t) - log pi_ref(y_t) for the
    paper's k1 (or k2 / k3, see kl_estimate), plus the RM score at the last response token
    (paper, eq. 2). logprobs, ref_logprobs, mask: (B, T); scores: (B,).
    Returns (rewards (B, T), kl (B, T)), both 0 where mask is False.
    """
    _same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(
            f"scores must be (B,) = {tuple(logprobs.shape[:1])}, got {tuple(scores.shape)}"
        )
    zeros = torch.zeros_like(logprobs)
    kl = torch.where(mask, kl_estimate(logprobs, ref_logprobs, estimator), zeros)
    rewards = -beta * kl
    last = (
        mask.long().cumsum(1) == mask.long().sum(1, keepdim=True)
    ) & mask  # (B, T) the last real token
    rewards = rewards + torch.where(
        last, scores[:, None].to(rewards.dtype).expand_as(rewards), zeros
    )
    return rewards, kl


def gae(
    *, rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens (B, T); the value after the last
    real token is 0. delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lam A_{t+1}.
    Returns (advantages, returns = advantages + values), 0 where mask is False.
    """
    _same_shape(rewards=rewards, values=values, mask=mask)
    zeros = torch.zeros_like(values)
    rewards = torch.where(mask, rewards, zeros)
    values = torch.where(mask, values, zeros)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        adv = torch.where(
            mask[:, t], adv, torch.zeros_like(adv)
        )  # padding neither earns nor passes on
        advantages[:, t] = adv
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        next_adv = torch.where(mask[:, t], adv, next_adv)
    returns = torch.where(mask, advantages + values, zeros)
    return advantages, returns


def policy_loss(
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip: float,
    is_weights: Tensor | None = None,
    tokens: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate, mean over response tokens. All inputs (B, T).
    loss = mean(w * max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip))), ratio = exp(logp -
    old), w = is_weights (1 when None: the rollout came from the training policy itself).
    Stats: clip_frac (share of tokens where the clipped term is active), approx_kl
    (mean 0.5 * (logp - old)^2). `tokens`: what the sum is divided by (default: mask.sum());
    N processes each holding part of a minibatch pass (the minibatch's token count) / N, so
    that the mean of their gradients is one process's over the whole minibatch.
    """
    _same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(unclipped, clipped)
    if is_weights is not None:
        _same_shape(logprobs=logprobs, is_weights=is_weights)
        per_token = per_token * is_weights
    loss = _token_mean(per_token, mask, tokens)
    stats = {
        "policy_loss": loss.detach(),
        "clip_frac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio**2, mask).detach(),
    }
    return loss, stats


def ptx_loss(
    *, policy_loss: Tensor, ptx_logits: Tensor, ptx_labels: Tensor, ptx_coef: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-ptx (paper, eq. 2): the RL objective plus gamma * E_pretrain[log pi(x)], as a loss.

    policy_loss: () the clipped PPO loss of the minibatch; ptx_logits: (N, V) at the positions
    that predict the N pretraining tokens ptx_labels: (N,); ptx_coef: gamma (paper: 27.8).
    loss = policy_loss + gamma * (-1/N * sum_i log pi(ptx_labels_i)).
    """
    if policy_loss.ndim != 0:
        raise ValueError(f"ptx_loss: expected a scalar policy_loss, got {tuple(policy_loss.shape)}")
    nll, _ = nll_loss(logits=ptx_logits, labels=ptx_labels)
    return policy_loss + ptx_coef * nll, {"ptx_loss": nll.detach()}


def tis_weights(*, logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling weights for rollouts drawn by another engine (int8, vLLM):
    w = min(pi_old(y_t) / pi_engine(y_t), cap) per token, 1 on padding. All (B, T).
    (verl and TRL correct the engine/trainer mismatch this way; the cap bounds the variance.)"""
    _same_shape(logprobs=logprobs, engine_logprobs=engine_logprobs, mask=mask)
    log_w = torch.where(mask, logprobs - engine_logprobs, torch.zeros_like(logprobs))
    return torch.clamp(torch.exp(log_w), max=cap)


def value_loss(
    *,
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float,
    tokens: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: 0.5 * mean(max((V - R)^2, (clip_old(V) - R)^2)), where clip_old(V)
    keeps V within `clip` of the rollout's value. All inputs (B, T); `tokens` as in
    policy_loss."""
    _same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * _token_mean(torch.maximum(err, err_clipped), mask, tokens)
    stats = {
        "value_loss": loss.detach(),
        "value_clip_frac": masked_mean((err_clipped > err).float(), mask).detach(),
    }
    return loss, stats


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim. (..., V) -> (...)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -(logprobs.exp() * logprobs).sum(-1)


def explained_variance(*, values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var(returns - values) / Var(returns) over masked entries."""
    _same_shape(values=values, returns=returns, mask=mask)
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_diff = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return 1.0 - var_diff / var_returns.clamp(min=1e-8)


class AdaptiveKLController:
    """lm-human-preferences' adaptive KL coefficient (Ziegler et al. 2019, eq. 2):
    e = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + e * n_steps / horizon)."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


class FixedKLController:
    """A constant KL coefficient (the paper: beta = 0.02)."""

    def __init__(self, value: float):
        self.value = value

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]
