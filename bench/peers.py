"""The peer a rollout bench measures against: transformers' `generate` as shipped, sampling at
temperature 1 over the full vocabulary, every row made to write all its new tokens."""

from __future__ import annotations

import torch


def peer_sampling(new_tokens: int, **kw):
    """transformers' GenerationConfig of the peers: temperature 1 over the full vocabulary,
    every row made to write all `new_tokens`."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        **kw,
    )


def hf_generate(model, tokenizer, rows: list[list[int]], *, new_tokens: int, device="cpu") -> int:
    """Response tokens produced by one `model.generate` call over left-padded prompt ids."""
    from instructrl import rollout

    eos = sorted(rollout.eos_token_ids(model, tokenizer))
    input_ids, mask = rollout.left_pad(rows, tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.long().to(device),
            generation_config=peer_sampling(
                new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos
            ),
        )
    new = out[:, input_ids.shape[1] :].tolist()
    return sum(len(rollout.cut_response(r, set(eos))[0]) for r in new)


def engine_tokens(engine, rows: list[list[int]], *, new_tokens: int, k: int = 1) -> int:
    """Response tokens produced by our rollout engine on the same work: every row writes all its
    new tokens; with k > 1, each prompt's k samples share one prefill."""
    gens = engine.generate(
        rows,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        temperature=1.0,
        batch_size=len(rows) * k,
        samples_per_prompt=k,
    )
    return sum(len(g.token_ids) for g in gens)


def hf_generate_sampled(
    model, tokenizer, rows: list[list[int]], *, new_tokens: int, temperature: float, top_p: float
) -> int:
    """Response tokens of one `model.generate` call that samples with our InverseCDFSampler and
    stops each row at EOS (what rollout.generate ran before its own decode loop): finished rows
    keep decoding padding until the batch's last row ends."""
    from transformers import GenerationConfig, LogitsProcessorList

    from instructrl import rollout

    eos = sorted(rollout.eos_token_ids(model, tokenizer))
    input_ids, mask = rollout.left_pad(rows, tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask.long(),
            generation_config=GenerationConfig(
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
            ),
            logits_processor=LogitsProcessorList(
                [rollout.InverseCDFSampler(temperature=temperature, top_k=0, top_p=top_p)]
            ),
        )
    new = out[:, input_ids.shape[1] :].tolist()
    return sum(len(rollout.cut_response(r, set(eos))[0]) for r in new)
