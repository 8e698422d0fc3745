"""Token batches for training and scoring: examples, right padding, the NLL of a batch, RM scores.

Shared by SFT (demonstrations and pretraining chunks), the reward model (K completions per
prompt), PPO-ptx (pretraining chunks), SFT checkpoint selection and evaluation (RM scores,
perplexity). Right padding with an attention mask, one sequence per row, so no example attends
to another; masks come from lengths, never from `input_ids != pad_id` (pad = EOS in SmolLM2).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from instructrl import losses, models
from instructrl.errors import UserError
from instructrl.rollout import encode_response, ended


@dataclass
class Example:
    """One supervised sequence; the loss covers input_ids[n_prompt:] (all of it when 0)."""

    input_ids: list[int]
    n_prompt: int


@dataclass
class RankedExample:
    """The K completions of one prompt and their ranks (reward-model training)."""

    completions: list[list[int]]  # K token id lists: prompt + response + EOS
    ranks: list[int]  # (K,) 0 = best; ties share a rank
    prompt_len: int = 0  # where the responses begin (the prompt's tokens, common to the K)


def response_starts(examples: Sequence[RankedExample]) -> torch.Tensor:
    """(sum K,) each completion's first response column in collate_ranked's right-padded rows."""
    return torch.tensor([e.prompt_len for e in examples for _ in e.completions], dtype=torch.long)


def right_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, *, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) input ids padded on the right with pad_id, and the (B, L) bool mask of real tokens;
    L is the longest sequence, or `width` (no sequence may be longer)."""
    width = max(len(s) for s in seqs) if width is None else width
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention[i, : len(s)] = True
    return input_ids, attention


def collate(
    examples: list[Example], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) input ids, attention mask, and the loss mask (response tokens)."""
    input_ids, attention = right_pad([e.input_ids for e in examples], pad_id)
    loss_mask = torch.zeros_like(attention)
    for i, e in enumerate(examples):  # the first token has no prediction
        loss_mask[i, max(e.n_prompt, 1) : len(e.input_ids)] = True
    return input_ids, attention, loss_mask


def collate_ranked(examples: list[RankedExample], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Every completion of the batch as one right-padded (sum K_b, L) batch, plus (B, K) ranks
    and valid mask and the (B, K) index of each completion's row (-1 where invalid)."""
    input_ids, attention = right_pad([ids for e in examples for ids in e.completions], pad_id)
    k_max = max(len(e.completions) for e in examples)
    ranks = torch.zeros((len(examples), k_max), dtype=torch.long)
    valid = torch.zeros((len(examples), k_max), dtype=torch.bool)
    rows = torch.full((len(examples), k_max), -1, dtype=torch.long)
    row = 0
    for b, e in enumerate(examples):
        k = len(e.completions)
        ranks[b, :k] = torch.tensor(e.ranks)
        valid[b, :k] = True
        rows[b, :k] = torch.arange(row, row + k)
        row += k
    return input_ids, attention, ranks, valid, rows


def masked_logits(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) logits at the positions that predict the N loss-mask tokens, and those (N,)
    tokens: logits computed only where a loss needs them."""
    hidden = models.final_hidden(model, input_ids, attention)
    return models.next_token_logits(model, hidden, loss_mask), input_ids[loss_mask]


def nll_loss(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean NLL over the batch's loss-mask tokens."""
    logits, labels = masked_logits(model, input_ids, attention, loss_mask)
    return losses.nll_loss(logits=logits, labels=labels)


@torch.no_grad()
def mean_nll(
    model: Any, examples: list[Example], pad_id: int, batch_size: int, device: Any
) -> float:
    """Token-weighted mean NLL over examples (validation loss, perplexity)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch_size):
        ids, attn, mask = (t.to(device) for t in collate(examples[i : i + batch_size], pad_id))
        loss, stats = nll_loss(model, ids, attn, mask)
        total += loss.item() * int(stats["tokens"])
        tokens += int(stats["tokens"])
    model.train(was_training)
    return total / max(tokens, 1)


@torch.no_grad()
def example_nlls(
    model: Any, examples: list[Example], pad_id: int, batch_size: int, device: Any
) -> list[float]:
    """(N,) mean NLL of each example's loss-mask tokens: the per-chunk values behind a
    perplexity, for paired intervals between two models on the same chunks."""
    was_training = model.training
    model.eval()
    out: list[float] = []
    for i in range(0, len(examples), batch_size):
        ids, attn, mask = (t.to(device) for t in collate(examples[i : i + batch_size], pad_id))
        logits, labels = masked_logits(model, ids, attn, mask)  # (N, V), (N,)
        nll = -losses.token_logprobs(logits.float(), labels)  # (N,) in the batch's row order
        counts = mask.sum(1).tolist()
        for chunk in torch.split(nll, counts):
            out.append(chunk.mean().item())
    model.train(was_training)
    return out


def ptx_examples(
    tokenizer: Any, *, n: int, max_length: int, seed: int, split: str = "ptx"
) -> list[Example]:
    """n chunks of the shipped held-out prose, every token in the loss (n_prompt = 0)."""
    from instructrl.data import load_heldout_text

    ids: list[int] = []
    for doc in load_heldout_text(split):
        ids.extend(tokenizer(doc["text"], add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= n * max_length * 2:
            break
    chunks = [ids[i : i + max_length] for i in range(0, len(ids) - max_length + 1, max_length)]
    random.Random(seed).shuffle(chunks)
    return [Example(c, 0) for c in chunks[:n]]


@torch.no_grad()
def score_texts(
    model: Any,
    tokenizer: Any,
    pairs: list[tuple[Any, str]],
    *,
    batch_size: int,
    max_length: int,
    device: Any,
    finish_reasons: Sequence[str | None] | None = None,
) -> list[float]:
    """Rewards of (prompt, response) pairs, in their order; a prompt too long for max_length
    is an error. A response whose finish reason is "length" is scored without EOS
    (rollout.encode_response). Each distinct sequence is scored once. On our reward model the
    responses of one prompt (several policies' answers, several draws) share one forward of the
    prompt (shared_prefix_hidden, up to batch_size rows at a time); the sequences left
    alone, and every sequence of other models, go in batches by length (little padding)."""
    reasons = list(finish_reasons) if finish_reasons is not None else [None] * len(pairs)
    encoded, prompt_of = [], {}
    for (p, r), f in zip(pairs, reasons, strict=True):
        e = encode_response(tokenizer, p, r, max_length=max_length, ended=ended(f))
        if e is None:
            raise UserError(
                f"score: a prompt is longer than max_length={max_length} - 8 tokens; raise max_length"
            )
        encoded.append(tuple(e[0]))
        prompt_of[encoded[-1]] = encoded[-1][: e[1]]
    distinct = sorted(set(encoded), key=lambda e: (len(e), e))
    scores: dict[tuple[int, ...], float] = {}
    if _is_reward_model(model):
        groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for e in distinct:
            groups.setdefault(prompt_of[e], []).append(e)
        alone = []
        for rows in groups.values():
            for i in range(0, len(rows), batch_size):
                chunk = rows[i : i + batch_size]
                if len(chunk) == 1:
                    alone += chunk
                    continue
                hidden = shared_prefix_hidden(
                    model.backbone,
                    chunk,
                    tokenizer.pad_token_id,
                    pooling=model.pooling,
                    response_start=len(prompt_of[chunk[0]]),
                )
                scores.update(zip(chunk, model.reward_of_hidden(hidden).tolist(), strict=True))
        distinct = sorted(alone, key=lambda e: (len(e), e))
    for i in range(0, len(distinct), batch_size):
        chunk = distinct[i : i + batch_size]
        ids, attn = right_pad(chunk, tokenizer.pad_token_id)
        starts = torch.tensor([len(prompt_of[e]) for e in chunk], device=device)  # right padding
        kw = models.response_start_kwargs(model, starts)
        scores.update(
            zip(chunk, model(ids.to(device), attn.to(device), **kw).tolist(), strict=True)
        )
    return [scores[e] for e in encoded]


def _is_reward_model(model: Any) -> bool:
    """Our RewardModel itself (a backbone and a scalar head as its own submodules), not a
    wrapper (DDP, FSDP, a DeepSpeed engine) that only forwards to one."""
    children = getattr(model, "_modules", {})
    return "backbone" in children and "head" in children and hasattr(model, "reward_of_hidden")


@torch.no_grad()
def shared_prefix_hidden(
    backbone: Any,
    rows: Sequence[Sequence[int]],
    pad_id: int,
    *,
    pooling: str = "last",
    response_start: int | None = None,
) -> torch.Tensor:
    """(K, H) fp32 what a reward head reads of K sequences (models.pool_hidden): the final
    hidden state at each one's last token, or with pooling="mean" the mean of the final hidden
    states from `response_start` (the prompt's length, common to the K rows) to its end.
    Their common prefix (all of it but the token before the shortest row's end, and nothing of
    the responses under mean pooling) is computed once and its KV cache repeated K times; on
    the backbone's device."""
    from transformers import DynamicCache

    from instructrl.rollout import _cache_keyword

    device = next(backbone.parameters()).device
    shortest = min(len(r) for r in rows)
    limit = shortest - 1 if pooling == "last" else min(shortest - 1, int(response_start or 0))
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    if n == 0:  # nothing shared: one plain forward
        ids, attn = right_pad(rows, pad_id)
        ids, attn = ids.to(device), attn.to(device)
        hidden = models.final_hidden(backbone, ids, attn)
        start = None if response_start is None else torch.full((len(rows),), response_start)
        return models.pool_hidden(hidden, attn, pooling, start).float()
    keyword, cache = _cache_keyword(backbone), DynamicCache()
    prefix = torch.tensor([list(rows[0][:n])], device=device)
    backbone(
        input_ids=prefix,
        attention_mask=torch.ones_like(prefix),
        position_ids=torch.arange(n, device=device)[None],
        use_cache=True,
        logits_to_keep=1,
        **{keyword: cache},
    )
    cache.batch_repeat_interleave(len(rows))
    rest, mask = right_pad([r[n:] for r in rows], pad_id)  # (K, R), every row >= 1 token
    out = backbone(
        input_ids=rest.to(device),
        attention_mask=torch.cat([torch.ones((len(rows), n), dtype=torch.long), mask.long()], 1).to(
            device
        ),
        position_ids=(n + torch.arange(rest.shape[1]).expand_as(rest)).to(device),
        use_cache=True,
        output_hidden_states=True,
        logits_to_keep=1,
        **{keyword: cache},
    )
    hidden = out.hidden_states[-1]  # (K, R, H): columns n.. of the rows
    start = None if response_start is None else torch.full((len(rows),), response_start - n)
    return models.pool_hidden(hidden, mask.to(device), pooling, start).float()
