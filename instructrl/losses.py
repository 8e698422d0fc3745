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
