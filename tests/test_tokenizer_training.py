"""Tokenizer training loop: resume to the same final state, NaN stops naming the step, artifacts."""

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from hartkit.engine import CheckpointManager, NonFiniteLossError
from hartkit.tokenizers import build_tokenizer
from hartkit.tokenizers.checkpoint import tokenizer_config
from hartkit.tokenizers.trainer import train_tokenizer


class RandomImages(Dataset):
    def __init__(self, n=16, size=16, nan=False):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        if nan:
            self.x[:] = float("nan")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


def cfg(kind="discrete", steps=6, **train):
    c = tokenizer_config({
        "name": kind, "kind": kind,
        "autoencoder": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "dec_res_blocks": 1, "z_channels": 4,
                        "norm_groups": 4},
        "quantizer": {"vocab_size": 32, "patch_nums": [1, 2, 4, 8], "dead_code_every": 2},
        "train": {"steps": steps, "batch_size": 4, "checkpoint_every": 2, "log_every": 2, "warmup_steps": 2,
                  "grid_images": 2, "lr": 1e-3, **train},
    })
    return c


def fresh(c):
    torch.manual_seed(0)
    return build_tokenizer(c)


@pytest.mark.parametrize("kind", ["discrete", "hybrid"])
def test_resume_reaches_the_same_final_state(tmp_path, kind):
    c = cfg(kind, ema_decay=0.9)
    data = RandomImages()
    torch.manual_seed(123)
    full = train_tokenizer(fresh(c), data, c, tmp_path / "a", torch.device("cpu"), seed=0)
    assert full.finished and full.step == 6

    torch.manual_seed(123)
    part = train_tokenizer(fresh(c), data, c, tmp_path / "b", torch.device("cpu"), seed=0, stop_after=4)
    assert not part.finished and part.step == 4
    assert CheckpointManager(tmp_path / "b" / "checkpoints").latest_step() == 4
    torch.manual_seed(999)  # a new process: different global RNG until the checkpoint restores it
    resumed = train_tokenizer(fresh(c), data, c, tmp_path / "b", torch.device("cpu"), seed=0, resume=True)
    assert resumed.finished and resumed.step == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    assert (tmp_path / "b" / "reconstructions.png").stat().st_size > 0


def test_without_resume_it_starts_over(tmp_path):
    c = cfg(steps=2)
    train_tokenizer(fresh(c), RandomImages(), c, tmp_path, torch.device("cpu"), stop_after=2)
    again = train_tokenizer(fresh(c), RandomImages(), c, tmp_path, torch.device("cpu"), stop_after=1)
    assert again.step == 1


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    c = cfg(steps=6)
    train_tokenizer(fresh(c), RandomImages(), c, tmp_path, torch.device("cpu"), stop_after=2)
    ckpt = CheckpointManager(tmp_path / "checkpoints")
    assert ckpt.latest_step() == 2
    with pytest.raises(NonFiniteLossError, match="step 2"):
        train_tokenizer(fresh(c), RandomImages(nan=True), c, tmp_path, torch.device("cpu"), resume=True)
    assert ckpt.latest_step() == 2
    model = fresh(c)
    ckpt.load_weights({"model": model})
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_continuous_training_and_gan_path(tmp_path):
    c = cfg("continuous", steps=2, gan_weight=0.1, gan_start_step=1, disc_ch=8, disc_layers=1)
    res = train_tokenizer(fresh(c), RandomImages(), c, tmp_path, torch.device("cpu"))
    assert res.finished and res.summary["final_loss"] == res.summary["final_loss"]  # finite, not NaN


def test_lpips_without_local_weights_explains(tmp_path):
    from hartkit.tokenizers.losses import LPIPSUnavailableError

    c = cfg(steps=1, lpips_weight=0.1)
    with pytest.raises(LPIPSUnavailableError, match="lpips_weights"):
        train_tokenizer(fresh(c), RandomImages(), c, tmp_path, torch.device("cpu"))


def test_training_improves_reconstruction(tmp_path):
    c = cfg(steps=30, lr=3e-3)
    data = RandomImages(n=8)
    model = fresh(c)
    x = data.x[:4]
    with torch.no_grad():
        before = (model.decode(model.encode(x)) - x).pow(2).mean()
    res = train_tokenizer(model, data, c, tmp_path, torch.device("cpu"))
    with torch.no_grad():
        after = (res.model.decode(res.model.encode(x)) - x).pow(2).mean()
    assert after < 0.8 * before


def test_config_schema_rejects_unknown_keys():
    with pytest.raises(Exception, match="no_such_key"):
        tokenizer_config(OmegaConf.create({"no_such_key": 1}))
