"""trainer.py: data order and sharding by hand, the supervised loop against a plain AdamW loop
written out here, gradient accumulation invariance, and best-checkpoint selection."""

from __future__ import annotations

import math

import pytest
import torch

from instructrl import trainer
from instructrl.config import SFTConfig

INPUTS = torch.arange(12, dtype=torch.float32).reshape(6, 2) / 10  # 6 examples, 2 features
TARGETS = torch.tensor([1.0, -1.0, 0.5, 2.0, 0.0, 1.5])


def _cfg(tmp_path, **over) -> SFTConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = {
        "data": "unused.jsonl",
        "out": str(tmp_path),
        "lr": 0.1,
        "batch_size": 2,
        "epochs": 2,
        "checkpoint_every": 0,
        "device": "cpu",
        **over,
    }
    return SFTConfig(**values)


def _linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(2, 1)


def _mse(model):
    def loss_fn(batch: list[int]):
        idx = torch.tensor(batch)
        loss = ((model(INPUTS[idx]).squeeze(-1) - TARGETS[idx]) ** 2).mean()
        return loss, {"loss": loss.item()}, len(batch)

    return loss_fn


def _fit(cfg, **kw):
    accelerator = trainer.make_accelerator(cfg)
    run = trainer.setup(accelerator, cfg, _linear(), n_examples=len(TARGETS))
    state = trainer.fit(run, prefix="t", loss_fn=_mse(run.model), **kw)
    return run, state


def test_epoch_order_is_a_seeded_permutation():
    a = trainer.epoch_order(10, seed=3, epoch=0)
    assert sorted(a) == list(range(10))
    assert a == trainer.epoch_order(10, seed=3, epoch=0)
    assert a != trainer.epoch_order(10, seed=3, epoch=1)
    assert trainer.micro_batches(5, batch_size=2, seed=3, epoch=0) == [
        trainer.epoch_order(5, seed=3, epoch=0)[i : i + 2] for i in (0, 2, 4)
    ]


def test_steps_and_sharding_by_hand():
    # 10 examples, 2 per micro-batch, 2 micro-batches a step, 2 processes: ceil(10 / 8) = 2 steps
    assert trainer.steps_per_epoch(10, 2, 2, 2) == 2
    assert trainer.steps_per_epoch(8, 2, 2, 2) == 1
    batches = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    # step 0 takes micro-batches 0-3: process 0 gets 0 and 2, process 1 gets 1 and 3
    assert trainer.step_slots(batches, 0, 2, 0, 2) == [[0, 1], [4, 5]]
    assert trainer.step_slots(batches, 0, 2, 1, 2) == [[2, 3], [6, 7]]
    # step 1: only micro-batch 4 is left, for process 0; every process keeps grad_accum slots
    # (the same number of backward passes, so no all-reduce waits for a rank that has none)
    assert trainer.step_slots(batches, 1, 2, 0, 2) == [[8, 9], None]
    assert trainer.step_slots(batches, 1, 2, 1, 2) == [None, None]


def test_setup_counts_steps_from_epochs_or_max_steps(tmp_path):
    accelerator = trainer.make_accelerator(_cfg(tmp_path))
    run = trainer.setup(accelerator, _cfg(tmp_path, epochs=3), _linear(), n_examples=6)
    assert (run.per_epoch, run.total) == (3, 9)  # ceil(6 / 2) steps an epoch
    run = trainer.setup(accelerator, _cfg(tmp_path, max_steps=4), _linear(), n_examples=6)
    assert run.total == 4


def test_fit_equals_a_plain_adamw_loop(tmp_path):
    """The same steps written out with torch.optim.AdamW, the cosine schedule and clipping."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    cfg = _cfg(tmp_path, grad_clip=0.5)
    run, state = _fit(cfg)
    assert state["step"] == 6
    assert run.optimizer.optimizer.defaults["fused"]  # ours fused, the loop below foreach

    model = _linear()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95), weight_decay=0.0)
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt, num_warmup_steps=0, num_training_steps=6, min_lr_rate=0.1
    )
    for epoch in range(2):
        order = trainer.epoch_order(6, seed=0, epoch=epoch)
        for start in (0, 2, 4):
            idx = torch.tensor(order[start : start + 2])
            loss = ((model(INPUTS[idx]).squeeze(-1) - TARGETS[idx]) ** 2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            sched.step()
            opt.zero_grad()
    for ours, theirs in zip(run.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=0)
    rows = [r for r in _rows(tmp_path) if "t/loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["t/lr"] == pytest.approx(0.1 * 0.1)  # cosine to 10 % of the peak


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    one, _ = _fit(_cfg(tmp_path / "a", batch_size=2, grad_accum=1, grad_clip=0))
    two, _ = _fit(_cfg(tmp_path / "b", batch_size=1, grad_accum=2, grad_clip=0))
    for a, b in zip(one.model.parameters(), two.model.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)


def test_evaluation_keeps_the_best_and_saves_it(tmp_path):
    values = iter([3.0, 1.0, 2.0, 0.5, 4.0, 9.0])
    saved = []
    evaluation = trainer.Evaluation(
        fn=lambda: {"val_loss": next(values)},
        select=("val_loss", "min"),
        save_best=lambda: saved.append(len(saved)),
    )
    _, state = _fit(_cfg(tmp_path, eval_every=1), evaluation=evaluation)
    # improvements at steps 1 (3.0), 2 (1.0) and 4 (0.5): three saves, the best is step 4
    assert len(saved) == 3 and (state["best"], state["best_step"]) == (0.5, 4)
    evaluated = [r["t/val_loss"] for r in _rows(tmp_path) if "t/val_loss" in r]
    assert evaluated == [3.0, 1.0, 2.0, 0.5, 4.0, 9.0]
    assert all(math.isfinite(v) for v in evaluated)


def _rows(out):
    from instructrl.rundir import read_metrics

    return read_metrics(out / "metrics.jsonl")


def test_deepspeed_config_gets_what_prepare_cannot_read_from_us():
    """No DataLoader passes through accelerate.prepare, so DeepSpeed's micro-batch size comes
    from us (on an H200 prepare refused without it); it clips at grad_clip; ZeRO-3 gathers
    16-bit weights on save (our stages write whole HF directories; without it saving fails)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def fake(stage):
        config = {"zero_optimization": {"stage": stage}, "train_batch_size": "auto"}
        plugin = SimpleNamespace(deepspeed_config=config, zero_stage=stage)
        return SimpleNamespace(
            distributed_type=DistributedType.DEEPSPEED,
            num_processes=4,
            state=SimpleNamespace(deepspeed_plugin=plugin),
        )

    acc = fake(3)
    trainer.configure_deepspeed(acc, micro_batch_size=2, grad_clip=1.0)
    assert acc.state.deepspeed_plugin.deepspeed_config == {
        "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
        "train_micro_batch_size_per_gpu": 2,
        "train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
    }
    assert trainer.is_sharded(acc)
    acc = fake(2)
    trainer.configure_deepspeed(acc, micro_batch_size=2, grad_clip=0.0)
    config = acc.state.deepspeed_plugin.deepspeed_config
    # 0: no clipping (accelerate would fill "auto" with 1.0)
    assert config["gradient_clipping"] == 0.0 and config["zero_optimization"] == {"stage": 2}
    assert not trainer.is_sharded(acc)
    plain = SimpleNamespace(distributed_type=DistributedType.NO)
    trainer.configure_deepspeed(plain, micro_batch_size=2, grad_clip=1.0)  # a no-op
    assert not trainer.is_sharded(plain)
    model = _linear()
    assert trainer.full_state_dict(plain, model).keys() == model.state_dict().keys()
    assert trainer.is_sharded(SimpleNamespace(distributed_type=DistributedType.FSDP))


@pytest.mark.parametrize(
    ("bf16", "cpu_bf16", "native", "expected"),
    [
        (True, True, True, "bf16"),
        (True, True, False, "no"),  # emulated bf16: slower than fp32
        (True, False, True, "no"),  # off unless asked for
        (False, True, True, "no"),
    ],
)
def test_cpu_bf16_autocast_only_where_asked_and_native(
    tmp_path, monkeypatch, bf16, cpu_bf16, native, expected
):
    """cpu_bf16: the CPU trains under bf16 autocast (matmuls in bf16, weights, gradients and
    optimizer state fp32) only when asked and when it multiplies bf16 natively."""
    from accelerate.state import AcceleratorState

    from instructrl import models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: native)
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        acc = trainer.make_accelerator(_cfg(tmp_path, bf16=bf16, cpu_bf16=cpu_bf16))
        assert acc.mixed_precision == expected
        model = acc.prepare(_linear())
        out = model(INPUTS)
        with acc.autocast():
            inside = torch.nn.functional.linear(INPUTS, model.weight)
        assert out.dtype == torch.float32 and model.weight.dtype == torch.float32
        assert inside.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_stages_of_one_process_each_get_their_own_precision(tmp_path, monkeypatch):
    """`instructrl run` builds one accelerator per stage in one process: a bf16 stage (cpu_bf16)
    followed by an fp32 one, and back, each gets what it asked for (accelerate alone refuses
    a second precision in a process)."""
    from accelerate.state import AcceleratorState

    from instructrl import models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        for cpu_bf16, expected in ((True, "bf16"), (False, "no"), (False, "no"), (True, "bf16")):
            acc = trainer.make_accelerator(_cfg(tmp_path, cpu_bf16=cpu_bf16))
            assert acc.mixed_precision == expected
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
