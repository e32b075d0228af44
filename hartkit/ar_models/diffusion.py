"""Per-token diffusion head (MAR / HART style).

A small MLP with AdaLN residual blocks predicts the noise added to one
token's continuous value, conditioned on the transformer's hidden state of
that token. Training: cosine schedule over ``num_train_steps`` (1000),
epsilon prediction, optionally a learned variance (IDDPM: the model outputs
an interpolation between beta_t and the posterior variance, trained with the
variational bound on a stopped-gradient mean). Sampling: ``num_sample_steps``
evenly respaced ancestral steps (8 by default), classifier-free guidance on
the noise prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hartkit.errors import ConfigError


def cosine_alpha_bar(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 of the cosine schedule (Nichol & Dhariwal), betas capped at 0.999, float64."""
    f = lambda t: math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(num_steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


class GaussianDiffusion:
    """Schedule arithmetic for one set of timesteps (the training one or a respaced subset of it)."""

    def __init__(self, alpha_bar: torch.Tensor, timesteps: torch.Tensor):
        self.alpha_bar = alpha_bar  # (N,) float64, at the kept timesteps
        self.timesteps = timesteps  # (N,) original training timestep of each kept step (the model's input)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        self.betas = 1 - alpha_bar / prev
        self.alpha_bar_prev = prev
        self.post_var = self.betas * (1 - prev) / (1 - alpha_bar)
        # the posterior variance is 0 at t=0; use the next value there so its log is finite (IDDPM)
        self.post_log_var = torch.log(torch.cat([self.post_var[1:2], self.post_var[1:]]))
        self.post_c0 = self.betas * prev.sqrt() / (1 - alpha_bar)
        self.post_ct = (1 - prev) * (1 - self.betas).sqrt() / (1 - alpha_bar)

    @classmethod
    def training(cls, num_steps: int) -> GaussianDiffusion:
        return cls(cosine_alpha_bar(num_steps), torch.arange(num_steps))

    @classmethod
    def respaced(cls, num_train_steps: int, num_sample_steps: int) -> GaussianDiffusion:
        """Evenly spaced subset of the training steps (always including the first and the last)."""
        if not 1 <= num_sample_steps <= num_train_steps:
            raise ConfigError(f"ar.diffusion.num_sample_steps must be in [1, {num_train_steps}], got {num_sample_steps}")
        ab = cosine_alpha_bar(num_train_steps)
        keep = torch.linspace(0, num_train_steps - 1, num_sample_steps).round().long().unique()
        return cls(ab[keep], keep)

    def _at(self, arr: torch.Tensor, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return arr.to(like.device)[i].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self._at(self.alpha_bar, i, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ab = self._at(self.alpha_bar, i, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self._at(self.post_c0, i, x_t) * x0 + self._at(self.post_ct, i, x_t) * x_t

    def model_log_var(self, v: torch.Tensor | None, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Learned: interpolate log beta and log posterior variance with frac = (v + 1) / 2.

        Fixed (``v`` None): beta_t ("fixed large", DDPM), which is the better fixed choice for data of about
        unit variance when only a few respaced steps are taken (the posterior variance, "fixed small",
        shrinks the samples' spread)."""
        hi = self._at(torch.log(torch.cat([self.post_var[1:2], self.betas[1:]])), i, like)
        if v is None:
            return hi.expand_as(like)
        lo = self._at(self.post_log_var, i, like)
        frac = (v + 1) / 2
        return frac * hi + (1 - frac) * lo


def gaussian_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t followed by a 2-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class AdaLNResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada_lin(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionMLP(nn.Module):
    """eps (and optionally the variance interpolation) of one token from (x_t, t, condition)."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, learn_sigma: bool):
        super().__init__()
        self.token_dim, self.learn_sigma = token_dim, learn_sigma
        self.input_proj = nn.Linear(token_dim, width)
        self.time_embed = TimestepEmbedding(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim * (2 if learn_sigma else 1))
        self._init()

    @torch.no_grad()
    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for b in self.blocks:  # AdaLN-zero: every block starts as the identity
            nn.init.zeros_(b.ada_lin[-1].weight)
            nn.init.zeros_(b.ada_lin[-1].bias)
        nn.init.zeros_(self.final_ada[-1].weight)
        nn.init.zeros_(self.final_ada[-1].bias)
        nn.init.zeros_(self.out.weight)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.time_embed(t) + self.cond_embed(cond)
        h = self.input_proj(x_t)
        for b in self.blocks:
            h = b(h, y)
        shift, scale = self.final_ada(y).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """The diffusion MLP plus its training loss and its respaced ancestral sampler."""

    def __init__(self, token_dim: int, cond_dim: int, width: int = 256, depth: int = 3, num_train_steps: int = 1000,
                 num_sample_steps: int = 8, learn_sigma: bool = False, latent_scale: float = 1.0, batch_mul: int = 1):
        super().__init__()
        self.net = DiffusionMLP(token_dim, cond_dim, width, depth, learn_sigma)
        self.num_train_steps = num_train_steps
        self.num_sample_steps = num_sample_steps
        self.latent_scale = latent_scale
        self.batch_mul = batch_mul
        self.train_diffusion = GaussianDiffusion.training(num_train_steps)
        # Largest |scaled target| seen in training. The sampler clamps its x0 estimate to it: at the first
        # respaced step alpha_bar is ~2e-9, so an eps error d moves the mean by ~sqrt(ab_prev / ab) * d (~4500 d);
        # a briefly trained head would otherwise produce values far outside the data range.
        self.register_buffer("target_absmax", torch.zeros(()))

    @property
    def learn_sigma(self) -> bool:
        return self.net.learn_sigma

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.learn_sigma:
            eps, v = out.chunk(2, dim=-1)
            return eps, v
        return out, None

    def loss(self, target_NC: torch.Tensor, cond_ND: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean epsilon MSE (+ variational bound for the learned variance) over ``batch_mul`` noisings per token."""
        x0 = (target_NC * self.latent_scale).repeat(self.batch_mul, 1)
        if self.training:
            with torch.no_grad():
                self.target_absmax.copy_(torch.maximum(self.target_absmax, x0.detach().abs().max().float()))
        cond = cond_ND.repeat(self.batch_mul, 1)
        d = self.train_diffusion
        i = torch.randint(0, self.num_train_steps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = d.q_sample(x0, i, noise)
        eps, v = self._split(self.net(x_t, i, cond))
        loss = F.mse_loss(eps.float(), noise.float())
        if v is not None:
            # the bound trains only the variance: the mean's gradient comes from the MSE term (IDDPM)
            mean_pred = d.posterior_mean(d.predict_x0(x_t, i, eps.detach()), x_t, i)
            true_mean = d.posterior_mean(x0, x_t, i)
            kl = gaussian_kl(true_mean, d._at(d.post_log_var, i, x_t), mean_pred, d.model_log_var(v, i, x_t))
            loss = loss + kl.mean() / math.log(2.0) * self.num_train_steps / 1000.0
        return loss

    @torch.no_grad()
    def sample(self, cond_ND: torch.Tensor, guidance: float | None = None, generator: torch.Generator | None = None,
               num_steps: int | None = None, temperature: float = 1.0,
               eps_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Ancestral sampling with respaced steps.

        A float ``guidance`` w (0 included) expects ``cond_ND`` to stack [conditional; unconditional] rows (2N)
        and returns N samples with ``eps = (1 + w) eps_cond - w eps_uncond`` (the variance of the conditional
        half); ``None``: no guidance, one sample per row.
        ``eps_fn(x_t, t, cond)`` replaces the network (tests plug in an analytic denoiser); it returns what the
        network would (eps, concatenated with the variance output v when ``learn_sigma``).
        ``temperature`` scales the noise of every ancestral step (as MAR's diffusion loss samples: below 1 the
        draws move towards the modes of each token's distribution; 1 is plain ancestral sampling).
        """
        d = GaussianDiffusion.respaced(self.num_train_steps, num_steps or self.num_sample_steps)
        guided = guidance is not None
        n = cond_ND.shape[0] // 2 if guided else cond_ND.shape[0]
        token_dim = self.net.token_dim
        x = torch.randn((n, token_dim), device=cond_ND.device, dtype=cond_ND.dtype, generator=generator)
        net = eps_fn or self.net
        for step in reversed(range(len(d.timesteps))):
            i = torch.full((n,), step, device=x.device, dtype=torch.long)
            x_in = torch.cat([x, x]) if guided else x
            t_in = d.timesteps.to(x.device)[i.repeat(2) if guided else i]
            eps, v = self._split(net(x_in, t_in, cond_ND))
            if guided:
                eps_c, eps_u = eps.chunk(2)
                eps = (1 + guidance) * eps_c - guidance * eps_u
                v = None if v is None else v.chunk(2)[0]
            x0 = d.predict_x0(x, i, eps)
            if self.target_absmax > 0:
                x0 = x0.clamp(-float(self.target_absmax), float(self.target_absmax))
            mean = d.posterior_mean(x0, x, i)
            if step > 0:
                log_var = d.model_log_var(v, i, x)
                noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
                x = mean + (0.5 * log_var).exp() * noise * temperature
            else:
                x = mean
        return x / self.latent_scale
