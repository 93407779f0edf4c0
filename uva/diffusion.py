"""Gaussian diffusion for the two heads: cosine schedule, epsilon + learned variance, respacing.

Training: ``loss(model_fn, x0, cond)`` draws a timestep per row and returns the per-row loss
(MSE on epsilon plus the variational bound that trains the variance, as in improved DDPM).
Sampling: ``respaced(k).sample(model_fn, shape, cond)`` runs ``k`` ancestral steps spread over
the 1000 training steps; ``k`` is chosen at run time (100 for quality, 8-16 for a fast policy).
The schedule is computed in float64 on the host once; each device gets float32 copies of its
tables (made on first use), so the arithmetic stays float32 under bf16 autocast, and no step
copies from the host. Random numbers follow ``uva.rng``: the generator lives on the device of
the tensors it draws.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from uva import rng

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """alpha-bar of the cosine schedule (Nichol & Dhariwal), betas capped at 0.999."""
    f = lambda t: math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(num_steps)], dtype=torch.float64,
                         device="cpu")
    return torch.cumprod(1 - betas, 0)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp())


class GaussianDiffusion:
    """Discrete-time diffusion on a subset of the training timesteps (all of them by default)."""

    def __init__(self, alphas_cumprod: torch.Tensor, timestep_map: torch.Tensor | None = None,
                 num_train_steps: int | None = None):
        ac = alphas_cumprod.double().cpu()
        self.num_steps = len(ac)
        self.num_train_steps = num_train_steps or self.num_steps
        self.timestep_map = (timestep_map.cpu() if timestep_map is not None
                             else torch.arange(self.num_steps, device="cpu"))
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), ac[:-1]])
        self.betas = 1 - ac / ac_prev
        self.log_betas = torch.log(self.betas)
        self.alphas_cumprod = ac
        self.sqrt_ac = ac.sqrt()
        self.sqrt_one_minus_ac = (1 - ac).sqrt()
        self.sqrt_recip_ac = (1 / ac).sqrt()
        self.sqrt_recipm1_ac = (1 / ac - 1).sqrt()
        post_var = self.betas * (1 - ac_prev) / (1 - ac)
        self.post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if self.num_steps > 1 \
            else torch.log(self.betas)
        self.post_c1 = self.betas * ac_prev.sqrt() / (1 - ac)
        self.post_c2 = (1 - ac_prev) * (1 - self.betas).sqrt() / (1 - ac)
        self._respaced: dict[int, GaussianDiffusion] = {}
        self._device_tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    _TABLES = ("sqrt_ac", "sqrt_one_minus_ac", "sqrt_recip_ac", "sqrt_recipm1_ac", "post_log_var", "post_c1",
               "post_c2", "log_betas")

    def tables(self, device: str | torch.device) -> dict[str, torch.Tensor]:
        """float32 schedule tables (and the long ``timestep_map``) on ``device``, made once per device."""
        device = torch.device(device)
        if device not in self._device_tables:
            tabs = {k: getattr(self, k).float().to(device) for k in self._TABLES}
            tabs["timestep_map"] = self.timestep_map.to(device)
            self._device_tables[device] = tabs
        return self._device_tables[device]

    def _gather(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Table ``name`` at timesteps t (B,), shaped to broadcast over an ndim-d batch."""
        return self.tables(t.device)[name][t].view(-1, *([1] * (ndim - 1)))

    @classmethod
    def cosine(cls, num_steps: int = 1000) -> "GaussianDiffusion":
        return cls(cosine_alphas_cumprod(num_steps))

    def respaced(self, num_steps: int) -> "GaussianDiffusion":
        """Same process on ``num_steps`` evenly spaced timesteps (for fast sampling)."""
        if num_steps <= 0 or num_steps > self.num_steps:
            raise ValueError(f"sampling steps must be in [1, {self.num_steps}], got {num_steps}")
        if num_steps == self.num_steps:
            return self
        if num_steps not in self._respaced:
            use = torch.linspace(0, self.num_steps - 1, num_steps, device="cpu").round().long().unique()
            self._respaced[num_steps] = GaussianDiffusion(
                self.alphas_cumprod[use], timestep_map=self.timestep_map[use],
                num_train_steps=self.num_train_steps)
        return self._respaced[num_steps]

    # --- forward process -------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._gather("sqrt_ac", t, x0.ndim) * x0 + self._gather("sqrt_one_minus_ac", t, x0.ndim) * noise

    def _p_mean_logvar(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_x0: float | None = None,
                       known_zero: torch.Tensor | None = None):
        """Model output (eps, v) -> (mean, log variance, x0 prediction) of p(x_{t-1} | x_t).

        ``clip_x0`` bounds the x0 prediction before the posterior mean. The cosine schedule's last
        step (beta ~ 0.999) divides by sqrt(alpha) ~ 0.03, so an eps error of e at pure noise
        becomes ~30 e in x_{T-1}, far outside what the denoiser saw in training; bounding x0 keeps
        sampling on the data's scale (Diffusion Policy clips for the same reason).
        ``known_zero`` (B, D) bool: dimensions whose x0 is known to be zero (a narrower robot's
        padding, trained with no loss): x0 is zero there and the variance the posterior's, so
        those dimensions of x_t follow the forward process the denoiser was trained on.
        """
        eps, v = out.float().chunk(2, dim=-1)
        n = x_t.ndim
        min_log = self._gather("post_log_var", t, n)
        max_log = self._gather("log_betas", t, n)
        frac = (v + 1) / 2  # learned interpolation between the two variance bounds
        log_var = frac * max_log + (1 - frac) * min_log
        x0 = self._gather("sqrt_recip_ac", t, n) * x_t - self._gather("sqrt_recipm1_ac", t, n) * eps
        if clip_x0:
            x0 = x0.clamp(-clip_x0, clip_x0)
        if known_zero is not None:
            x0 = x0.masked_fill(known_zero, 0.0)
            log_var = torch.where(known_zero, min_log, log_var)
        mean = self._gather("post_c1", t, n) * x0 + self._gather("post_c2", t, n) * x_t
        return mean, log_var, x0

    # --- training --------------------------------------------------------------------------
    def loss(self, model_fn: ModelFn, x0: torch.Tensor, cond: torch.Tensor,
             generator: torch.Generator | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row loss (B,) for targets x0 (B, D) and conditions cond (B, C), on x0's device;
        ``weight`` (B, D) of 0/1 averages each row over the dimensions it keeps (padding of a
        narrower robot's actions gets no loss).

        Targets, noise, the schedule and the loss are float32 whatever the model computes in.
        """
        x0 = x0.float()
        b, device = x0.shape[0], x0.device
        t = rng.randint(self.num_steps, (b,), generator, device)
        noise = rng.randn(x0.shape, generator, device)
        x_t = self.q_sample(x0, t, noise)
        out = model_fn(x_t, self.tables(device)["timestep_map"][t], cond).float()
        eps, v = out.chunk(2, dim=-1)
        w = None if weight is None else weight.float()

        def mean(x: torch.Tensor) -> torch.Tensor:  # over each row's kept dimensions
            return x.mean(-1) if w is None else (x * w).sum(-1) / w.sum(-1).clamp(min=1.0)

        mse = mean((eps - noise) ** 2)
        # variational bound trains only the variance: the mean's gradient comes from the MSE
        p_mean, log_var, _ = self._p_mean_logvar(torch.cat([eps.detach(), v], -1), x_t, t)
        true_mean = self._gather("post_c1", t, 2) * x0 + self._gather("post_c2", t, 2) * x_t
        true_log_var = self._gather("post_log_var", t, 2)
        kl = mean(normal_kl(true_mean, true_log_var, p_mean, log_var)) / math.log(2.0)
        nll = mean(0.5 * (math.log(2 * math.pi) + log_var + (x0 - p_mean) ** 2 * (-log_var).exp())) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return mse + vb

    # --- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, model_fn: ModelFn, shape: tuple[int, ...], cond: torch.Tensor,
               generator: torch.Generator | None = None, temperature: float = 1.0,
               clip_x0: float | None = None, noise: torch.Tensor | None = None,
               known_zero: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling over this (possibly respaced) schedule on cond's device; returns x0
        (shape), float32; ``known_zero`` as in ``_p_mean_logvar`` (those dimensions return 0).

        ``noise`` (num_steps, *shape), drawn beforehand, replaces the draws (its first row is the
        start, row k the noise of the k-th step): the loop then draws nothing and has static
        shapes, so it can be captured in a CUDA graph or compiled.
        """
        device = cond.device
        if noise is not None and tuple(noise.shape) != (self.num_steps, *shape):
            raise ValueError(f"noise must be {(self.num_steps, *shape)}, got {tuple(noise.shape)}")
        x = rng.randn(shape, generator, device) if noise is None else noise[0].float()
        tmap = self.tables(device)["timestep_map"]
        for i in reversed(range(self.num_steps)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            out = model_fn(x, tmap[t], cond)
            mean, log_var, _ = self._p_mean_logvar(out, x, t, clip_x0, known_zero)
            if i > 0:
                eps = rng.randn(shape, generator, device) if noise is None else noise[self.num_steps - i]
                x = mean + (0.5 * log_var).exp() * eps * temperature
            else:
                x = mean
        return x if known_zero is None else x.masked_fill(known_zero, 0.0)
