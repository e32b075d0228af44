"""The engine's one training loop, driven by a toy task (what a new trainer would write)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hartkit.engine import NonFiniteLossError
from hartkit.engine.config import TrainConfig
from hartkit.engine.loop import TrainingTask, train


class Regression(TrainingTask):
    """Fit y = x @ w_true with noisy inputs: the noise comes from the global RNG, so the loop's reseeding matters."""

    name = "toy"
    label = "toy"

    def __init__(self, poison_step: int | None = None, noise: float = 0.01):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.dataset = [{"x": x[i], "y": y[i]} for i in range(64)]
        self.collate_fn = lambda items: {k: torch.stack([it[k] for it in items]) for k in items[0]}
        torch.manual_seed(1)
        self.model = self.runner = nn.Linear(4, 1)
        self.lr = 0.2
        self.updates: list[int] = []
        self.poison_step, self.noise = poison_step, noise

    def loss(self, runner, micro, step):
        noisy = micro["x"] + self.noise * torch.randn_like(micro["x"])
        loss = ((runner(noisy).squeeze(-1) - micro["y"]) ** 2).mean()
        if step == self.poison_step:
            loss = loss * float("nan")
        return loss, {"loss": float(loss.detach())}

    def after_update(self, step):
        self.updates.append(step)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "batch_size": 8, "warmup_steps": 0, "checkpoint_every": 4, "log_every": 1,
                          "cpu_amp": False, **kw})


def test_the_loop_learns_checkpoints_and_reports(tmp_path):
    task = Regression()
    res = train(task, _cfg(steps=100), tmp_path, torch.device("cpu"))
    assert res.finished and res.step == 100 and not res.model.training
    assert task.updates == list(range(1, 101))  # after_update sees the 1-based count of steps done
    assert res.summary["final_loss"] < 0.1  # the targets have variance ~15: a model that did not learn is far above
    assert (tmp_path / "checkpoints" / "step_00000100").is_dir()  # the end is checkpointed too


def test_a_killed_run_resumes_exactly(tmp_path):
    full = train(Regression(), _cfg(), tmp_path / "a", torch.device("cpu"), seed=5)
    part = train(Regression(), _cfg(), tmp_path / "b", torch.device("cpu"), seed=5, stop_after=6)
    assert not part.finished and part.step == 6
    torch.manual_seed(99)  # the global RNG between the two calls must not matter
    resumed = train(Regression(), _cfg(), tmp_path / "b", torch.device("cpu"), seed=5, resume=True)
    assert resumed.step == 12
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_grad_accumulation_equals_the_whole_batch(tmp_path):
    # the loss is a mean over the micro-batch; equal halves averaged give the whole batch's mean, so without
    # input noise the two runs differ only by float summation order (fp32, a few ulps per step over 12 steps)
    one = train(Regression(noise=0.0), _cfg(), tmp_path / "a", torch.device("cpu"))
    two = train(Regression(noise=0.0), _cfg(grad_accum=2), tmp_path / "b", torch.device("cpu"))
    for a, b in zip(one.model.parameters(), two.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 5"):
        train(Regression(poison_step=5), _cfg(), tmp_path, torch.device("cpu"))
    assert (tmp_path / "checkpoints" / "step_00000004").is_dir()


def test_train_threads_holds_for_the_loop_and_is_given_back(tmp_path):
    seen = []

    class Watch(Regression):
        def loss(self, runner, micro, step):
            seen.append(torch.get_num_threads())
            return super().loss(runner, micro, step)

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    train(Watch(), _cfg(steps=3, threads=other), tmp_path, torch.device("cpu"))
    assert seen == [other] * 3
    assert torch.get_num_threads() == before
