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


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of values where mask is True. values, mask: same shape."""
    _same_shape(values=values, mask=mask)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    masked = torch.where(mask, values, zeros)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
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
