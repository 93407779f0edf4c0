"""The fast policy path: ``predict_action`` with static shapes, captured once, replayed per call.

    sampler = ActionSampler(model, num_steps=16, batch_size=1, backend="graph")  # model on cuda
    actions = sampler(history, generator=g)   # (B, H, A) float32, model units

One call = one backbone pass (every future token masked) + ``num_steps`` action-head steps, the
decoupled policy path of ``UVA.predict_action``. What makes it fast on a GPU:

- static shapes: batch size, step count and temperature are fixed when the sampler is built;
  inputs are copied into fixed buffers, so the whole call can be recorded once;
- the noise of every step is drawn before the loop, in one call on the device's generator
  (``uva.rng``), so the recorded loop draws nothing;
- ``backend``: "eager" (no capture), "graph" (a CUDA graph of the whole call: one launch
  instead of hundreds of kernel launches), "compile" (``torch.compile``, inductor with CUDA
  graphs). The first call's capture or compilation happens in ``warmup()``, at construction;
- the model's weights in bf16 (as DeepSpeed trained them) with the sampler's arithmetic,
  schedule and noise in float32; attention is PyTorch SDPA (flash kernels on CUDA).

With the same noise the eager backend gives exactly ``UVA.predict_action``'s result.
"""

from __future__ import annotations

import torch

from uva import rng
from uva.model import UVA

BACKENDS = ("eager", "graph", "compile")


class ActionSampler:
    """``UVA.predict_action`` for a fixed batch size, step count and temperature."""

    def __init__(self, model: UVA, num_steps: int = 16, batch_size: int = 1, temperature: float = 1.0,
                 backend: str = "eager", with_proprio: bool | None = None, embodiment: int | None = None,
                 action_dims: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        param = next(model.parameters())
        self.device = param.device
        if backend == "graph" and self.device.type != "cuda":
            raise ValueError(f"backend 'graph' needs the model on a CUDA device, it is on {self.device}")
        cfg = model.cfg
        self.model, self.cfg, self.backend = model, cfg, backend
        self.num_steps, self.temperature = int(num_steps), float(temperature)
        self.with_proprio = bool(cfg.proprio_dim) if with_proprio is None else with_proprio
        schedule = model.diffusion.respaced(self.num_steps)
        b, dev = batch_size, self.device
        self.batch_size = b
        views = (cfg.num_views,) if cfg.num_views > 1 else ()
        self.history = torch.zeros(b, cfg.num_history, *views, cfg.latent_channels, cfg.latent_size, cfg.latent_size,
                                   device=dev)
        self.view_mask = torch.ones(b, cfg.num_views, dtype=torch.bool, device=dev) if views else None
        self.proprio = torch.zeros(b, cfg.num_history, cfg.proprio_dim, device=dev) if self.with_proprio else None
        self.lang = torch.zeros(b, cfg.lang_tokens, cfg.lang_dim, device=dev) if cfg.lang_dim else None  # zeros: none
        # the robot this sampler acts for (fixed: one policy drives one robot)
        self.embodiment = (torch.full((b,), int(embodiment), dtype=torch.long, device=dev)
                           if embodiment is not None and cfg.embodiments else None)
        # a robot narrower than the model's action width: its padding is sampled as the zeros it was
        # trained as, or the untrained dimensions would feed noise back into the robot's own
        self.action_mask = (torch.arange(cfg.action_dim, device=dev).expand(b, -1) < action_dims
                            if action_dims is not None and action_dims < cfg.action_dim else None)
        self.noise = torch.zeros(schedule.num_steps, b, cfg.action_horizon * cfg.action_dim, device=dev)
        self.out: torch.Tensor | None = None
        self.graph = None
        self.fn = self._run
        if backend == "compile":
            self.fn = torch.compile(self._run, mode="reduce-overhead" if dev.type == "cuda" else "default",
                                    fullgraph=True)
        self.warmup()

    @torch.no_grad()
    def _run(self) -> torch.Tensor:
        return self.model.predict_action(self.history, num_steps=self.num_steps, proprio=self.proprio, lang=self.lang,
                                         temperature=self.temperature, noise=self.noise,
                                         embodiment=self.embodiment, view_mask=self.view_mask,
                                         action_mask=self.action_mask)

    @torch.no_grad()
    def warmup(self) -> None:
        """Run (and for "graph", record) the call once on zeros: capture and compilation happen
        here, not in the first timed call."""
        if self.backend != "graph":
            for _ in range(3 if self.backend == "compile" else 1):  # compile records its graphs on a later call
                self.fn()
            return
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # allocations and lazy tables before the capture
            for _ in range(3):
                self._run()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._run()
        torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def __call__(self, history: torch.Tensor, proprio: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, view_mask: torch.Tensor | None = None,
                 lang: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Th, C, S, S) latents [, (B, Th, P) normalized proprioception] [, (B, K, lang_dim)
        instruction tokens; none: no instruction] -> (B, H, A) float32."""
        if tuple(history.shape) != tuple(self.history.shape):
            raise ValueError(f"history must be {tuple(self.history.shape)} (this sampler's batch size), "
                             f"got {tuple(history.shape)}")
        self.history.copy_(history)
        if self.view_mask is not None:  # several cameras: which ones this call has (default: all)
            self.view_mask.copy_(view_mask if view_mask is not None else torch.ones_like(self.view_mask))
        if self.proprio is not None:
            if proprio is None:
                raise ValueError("this sampler was built with proprioception: pass proprio")
            self.proprio.copy_(proprio)
        if self.lang is not None:
            self.lang.copy_(lang if lang is not None else torch.zeros_like(self.lang))
        self.noise.copy_(rng.randn(self.noise.shape, generator, self.device))
        if self.graph is not None:
            self.graph.replay()
            return self.out.clone()
        return self.fn().clone()
