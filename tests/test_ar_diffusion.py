"""The per-token diffusion head: schedule, training loss, respaced 8-step sampler, guidance."""

from __future__ import annotations

import torch

from hartkit.ar_models.diffusion import DiffusionHead, GaussianDiffusion, cosine_alpha_bar


def test_cosine_schedule_and_respacing():
    ab = cosine_alpha_bar(1000)
    assert ab.shape == (1000,) and (ab[1:] < ab[:-1]).all() and 0.99 < ab[0] <= 1 and ab[-1] < 1e-3
    d = GaussianDiffusion.respaced(1000, 8)
    assert d.timesteps.tolist()[0] == 0 and d.timesteps.tolist()[-1] == 999 and len(d.timesteps) == 8
    # respaced betas reproduce the same alpha_bar at the kept steps
    torch.testing.assert_close(torch.cumprod(1 - d.betas, 0), ab[d.timesteps])


def analytic_denoiser(mu: float, std: float, num_sample_steps: int = 8):
    """Optimal network output when x0 ~ N(mu, std^2) in every dimension: the exact eps and the variance
    interpolation v that makes each respaced reverse step the true Gaussian transition."""
    ab_all = cosine_alpha_bar(1000)
    d = GaussianDiffusion.respaced(1000, num_sample_steps)
    step_of = {int(t): i for i, t in enumerate(d.timesteps)}

    def fn(x_t, t, cond):
        ab = ab_all[t].to(x_t.dtype)[:, None]
        eps = (1 - ab).sqrt() * (x_t - ab.sqrt() * mu) / (ab * std**2 + 1 - ab)
        i = torch.tensor([step_of[int(tt)] for tt in t])
        var_x0 = std**2 * (1 - ab) / (ab * std**2 + 1 - ab)  # Var(x0 | x_t)
        true_var = d.post_var[i].float()[:, None] + d.post_c0[i].float()[:, None] ** 2 * var_x0
        lo = d.post_log_var[i].float()[:, None]
        hi = torch.log(torch.cat([d.post_var[1:2], d.betas[1:]]))[i].float()[:, None]
        frac = (true_var.log() - lo) / (hi - lo)
        return torch.cat([eps, (2 * frac - 1).expand_as(eps)], dim=1)

    return fn


def test_eight_step_sampler_reproduces_a_known_gaussian():
    head = DiffusionHead(token_dim=2, cond_dim=4, width=16, depth=1, num_sample_steps=8, learn_sigma=True)
    cond = torch.zeros(20000, 4)
    for mu, std in [(1.5, 0.5), (-0.5, 1.0), (0.0, 2.0)]:
        x = head.sample(cond, generator=torch.Generator().manual_seed(0), eps_fn=analytic_denoiser(mu, std))
        assert abs(x.mean().item() - mu) < 0.05 * max(std, 1)
        assert abs(x.std().item() / std - 1) < 0.05, (mu, std, x.std().item())


def test_fixed_variance_sampler_on_unit_variance_data():
    head = DiffusionHead(token_dim=2, cond_dim=4, width=16, depth=1, num_sample_steps=8)
    full = analytic_denoiser(0.5, 1.0)
    x = head.sample(torch.zeros(20000, 4), generator=torch.Generator().manual_seed(0),
                    eps_fn=lambda x_t, t, c: full(x_t, t, c)[:, :2])
    assert abs(x.mean().item() - 0.5) < 0.05 and abs(x.std().item() - 1.0) < 0.1


def test_guidance_formula_on_eps():
    head = DiffusionHead(token_dim=1, cond_dim=1, width=8, depth=1, num_sample_steps=8)
    ab_all = cosine_alpha_bar(1000)

    def eps_fn(x_t, t, cond):  # cond rows encode the mean of the data each half would produce
        ab = ab_all[t].to(x_t.dtype)[:, None]
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * cond) / (ab * 0.01 + 1 - ab)

    n = 4000
    cond = torch.cat([torch.full((n, 1), 1.0), torch.full((n, 1), 0.0)])
    x0 = head.sample(cond, guidance=0.0, generator=torch.Generator().manual_seed(0), eps_fn=eps_fn)
    x2 = head.sample(cond, guidance=2.0, generator=torch.Generator().manual_seed(0), eps_fn=eps_fn)
    assert x0.shape == (n, 1)
    assert abs(x0.mean().item() - 1.0) < 0.05  # guidance 0: the conditional distribution
    assert x2.mean().item() > 2.0  # guidance pushes away from the unconditional mean (0)


def test_training_loss_decreases_and_learned_sampler_matches_target():
    torch.manual_seed(0)
    head = DiffusionHead(token_dim=2, cond_dim=2, width=64, depth=2, batch_mul=4)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    # condition c in {-1, +1} selects the target mean; targets ~ N(2c, 0.3^2)
    losses = []
    for _ in range(200):
        c = torch.randint(0, 2, (64, 1)).float() * 2 - 1
        x0 = 2 * c.repeat(1, 2) + 0.3 * torch.randn(64, 2)
        loss = head.loss(x0, torch.cat([c, c], 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-30:]) / 30 < 0.7 * sum(losses[:30]) / 30
    cond = torch.ones(4000, 2)
    x = head.sample(cond, generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - 2.0) < 0.25
    assert x.std().item() < 0.8


def test_learned_variance_head_trains_and_samples():
    torch.manual_seed(0)
    head = DiffusionHead(token_dim=3, cond_dim=2, width=32, depth=1, learn_sigma=True, latent_scale=0.6)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    first = None
    for _ in range(60):
        loss = head.loss(torch.randn(64, 3) * 0.5 + 1, torch.ones(64, 2))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and loss.item() < first
    x = head.sample(torch.ones(16, 2), generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 3) and torch.isfinite(x).all()


def test_sampling_temperature_narrows_a_known_gaussian():
    """Temperature 1 is plain ancestral sampling (the same draws as the default); below 1 the spread of the
    samples of a known Gaussian shrinks while the mean stays, which is what MAR's temperature is for."""
    head = DiffusionHead(token_dim=2, cond_dim=4, width=16, depth=1, num_sample_steps=8, learn_sigma=True)
    cond, fn = torch.zeros(20000, 4), analytic_denoiser(1.5, 1.0)
    plain = head.sample(cond, generator=torch.Generator().manual_seed(0), eps_fn=fn)
    same = head.sample(cond, generator=torch.Generator().manual_seed(0), eps_fn=fn, temperature=1.0)
    assert torch.equal(plain, same)
    cold = head.sample(cond, generator=torch.Generator().manual_seed(0), eps_fn=fn, temperature=0.5)
    assert abs(cold.mean().item() - 1.5) < 0.05
    assert cold.std().item() < 0.8 * plain.std().item()
