"""The shared training engine: checkpoints, resume position, optimizer groups, EMA, NaN guard."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hartkit.engine import (
    EMA,
    CheckpointError,
    CheckpointManager,
    NonFiniteLossError,
    StepBatches,
    build_adamw,
    check_finite,
    finish_artifact,
    is_finished,
    load_artifact_weights,
    warmup_cosine_schedule,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.pos_embed = nn.Parameter(torch.zeros(5, 3))


def _train_steps(model, opt, sched, n):
    for _ in range(n):
        loss = model.norm(model.lin(torch.randn(8, 4))).pow(2).mean() + model.pos_embed.sum() * 0.01
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_checkpoint_roundtrip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = build_adamw(model, lr=1e-2, weight_decay=0.1, no_decay_keywords=("pos_",))
    sched = warmup_cosine_schedule(opt, 2, 10)
    _train_steps(model, opt, sched, 3)
    ckpt = CheckpointManager(tmp_path / "ck", keep=2)
    ckpt.save(3, models={"model": model}, optimizers={"opt": opt}, schedulers={"sched": sched}, extra={"loss": 1.5})
    expected_next = torch.rand(3)  # RNG draw right after the save

    other = Tiny()
    opt2 = build_adamw(other, lr=1e-2, weight_decay=0.1, no_decay_keywords=("pos_",))
    sched2 = warmup_cosine_schedule(opt2, 2, 10)
    extra = ckpt.load(models={"model": other}, optimizers={"opt": opt2}, schedulers={"sched": sched2})
    assert extra == {"loss": 1.5, "step": 3}
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert sched2.last_epoch == sched.last_epoch
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_checkpoint_keeps_only_the_newest_and_ignores_a_killed_writers_leftovers(tmp_path):
    model = Tiny()
    ckpt = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, models={"model": model})
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000003"]
    # a writer killed mid-save leaves only a temp folder: it is never what latest.json points to
    (tmp_path / ".tmp-step_00000004-dead").mkdir()
    (tmp_path / ".tmp-step_00000004-dead" / "model.safetensors").write_bytes(b"trunc")
    assert ckpt.latest_step() == 3
    ckpt.load_weights({"model": Tiny()})


def test_loading_a_mismatched_model_lists_the_keys(tmp_path):
    ckpt = CheckpointManager(tmp_path)
    ckpt.save(1, models={"model": Tiny()})
    with pytest.raises(CheckpointError, match="missing keys"):
        ckpt.load_weights({"model": nn.Linear(4, 3)})
    with pytest.raises(CheckpointError, match="no checkpoint"):
        CheckpointManager(tmp_path / "empty").load(models={"model": Tiny()})


def test_adamw_groups_skip_decay_on_1d_and_keyword_params():
    opt = build_adamw(Tiny(), lr=1e-3, weight_decay=0.05, no_decay_keywords=("pos_",))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4  # bias, norm w+b, pos_embed


def test_warmup_cosine_schedule_shape():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_schedule(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))


def test_ema_tracks_the_average():
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.75))
    assert not ema.module.weight.requires_grad


def test_check_finite_names_the_step():
    check_finite(torch.tensor(1.0), 3)
    with pytest.raises(NonFiniteLossError, match="step 17"):
        check_finite(torch.tensor(float("nan")), 17)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_step_batches_are_deterministic_and_resume_at_the_same_position():
    data = list(range(10))
    full = _take(StepBatches(data, batch_size=4, seed=3, collate_fn=list), 7)
    resumed = _take(StepBatches(data, batch_size=4, seed=3, start_step=4, collate_fn=list), 3)
    assert resumed == full[4:]
    # every epoch (2 steps of 4 out of 10 items) visits distinct items
    assert len(set(full[0] + full[1])) == 8
    other_seed = _take(StepBatches(data, batch_size=4, seed=4, collate_fn=list), 2)
    assert other_seed != full[:2]


def test_step_batches_reject_a_batch_larger_than_the_dataset():
    with pytest.raises(ValueError, match="data.train_size"):
        StepBatches(list(range(3)), batch_size=4, seed=0)


def test_artifact_is_unreadable_until_done(tmp_path):
    model = Tiny()
    with pytest.raises(FileNotFoundError, match="DONE"):
        load_artifact_weights(tmp_path, Tiny())
    finish_artifact(tmp_path, model, {"a": 1}, summary={"final_loss": 0.1})
    assert is_finished(tmp_path)
    other = load_artifact_weights(tmp_path, Tiny())
    assert torch.equal(other.lin.weight, model.lin.weight)


def test_creating_step_batches_does_not_touch_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    it = StepBatches(list(range(10)), batch_size=4, seed=0, collate_fn=list)
    next(it)
    assert torch.equal(torch.rand(2), expected)


def test_split_batch_keeps_order_and_pairs_fields():
    from hartkit.engine import split_batch

    batch = {"image": torch.arange(10).view(5, 2), "prompt": list("abcde")}
    parts = split_batch(batch, 2)
    assert [p["prompt"] for p in parts] == [list("abc"), list("de")]
    assert torch.equal(torch.cat([p["image"] for p in parts]), batch["image"])
    assert parts[1]["image"][0].tolist() == [6, 7]
    assert split_batch(batch, 1) == [batch]
    with pytest.raises(ValueError, match="grad_accum=6"):
        split_batch(batch, 6)
