"""The policy API over an exported bundle: recent camera frames in, the next action chunk out.

    from pipeline.policy import load_policy
    policy = load_policy("runs/finetune/export")            # safetensors + JSON only
    chunk = policy.predict(frames)   # frames: (num_history, H, W, 3) uint8, oldest first, spaced
                                     # policy.frame_stride control steps apart -> (K, action_dim)
                                     # in the robot's own units, one row per control step
    chunk = policy.predict(frames, proprio)  # a model that takes proprioception also needs the
                                     # robot state at those frames: (num_history, P), robot units
    chunk = policy.predict({"exterior": f0, "wrist": f1})  # a model of several views
    chunk = policy.predict(frames, instruction="put the cup on the plate")  # a model that takes
                                     # language (no instruction: it acts on the frames alone)

Inference is the decoupled path: one backbone pass with every future token masked, then the
action head's diffusion sampling; no video is generated. Frames go through the same resize,
crop and VAE (in the precision the shards were encoded in) as the training data.

On a GPU (``device="cuda"``) the model runs in bf16 and the call goes through
``uva.sampler.ActionSampler``: static shapes, noise drawn up front on the device, the whole call
recorded in a CUDA graph (``backend="graph"``, the default there; "compile" and "eager" are the
alternatives) during loading, so the first ``predict`` is as fast as the rest. On the CPU the
model runs in float32, step by step (``backend="none"``), as it always has. The object also follows the evaluation runner's policy
interface (``num_obs``, ``reset(seed)``, ``__call__(obs, num_actions)``; proprioception from
``obs["proprio"]``, else ``obs["agent_pos"]``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.export import BUNDLE_FORMAT
from uva import rng
from uva.sampler import BACKENDS

POLICY_BACKENDS = ("auto", "none", *BACKENDS)  # auto: graph on cuda, none (step by step) on cpu
log = logging.getLogger("uva.policy")


def control_steps_per_action(meta: dict) -> int:
    """Control steps each predicted action covers: one, for a bundle whose actions are the robot's
    control rows (``time_base: control_rows``); for an older bundle, trained on actions stored at
    the latent rate, the chunk spreads ``action_horizon`` actions over the ``num_future`` frames,
    ``frame_stride`` control steps apart."""
    if meta.get("time_base") == "control_rows":
        return 1
    window = meta["window"]
    return int(window["num_future"]) * int(window["frame_stride"]) // int(window["action_horizon"])


class UVAPolicy:
    needs_state = False

    def __init__(self, bundle: str | Path, device: str = "cpu", sampling_steps: int | None = None,
                 temperature: float | None = None, backend: str = "auto", precision: str = "auto",
                 action_clip: float | None = None):
        from safetensors.torch import load_file

        from pipeline.robots import RobotConfig
        from uva import UVA
        from uva.config import UVAConfig
        from uva_io.config import from_dict
        from uva_io.vae_bundle import load_vae

        self.root = Path(bundle)
        meta_path = self.root / "policy.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"policy bundle {self.root}: no policy.json (export one with uva-finetune)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"policy bundle {self.root}: format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        self.meta = meta
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        if backend not in POLICY_BACKENDS:
            raise ValueError(f"policy backend must be one of {POLICY_BACKENDS}, got {backend!r}")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"policy precision must be auto, fp32 or bf16, got {precision!r}")
        self.backend = ("graph" if on_gpu else "none") if backend == "auto" else backend
        self.precision = ("bf16" if on_gpu else "fp32") if precision == "auto" else precision
        self.config = from_dict(UVAConfig, meta["model_config"], prefix="model_config")
        if action_clip is not None:  # the bound on sampled normalized actions (x0), 0 = none
            if action_clip < 0:
                raise ValueError(f"policy action_clip must be >= 0, got {action_clip}")
            self.config.action_clip = float(action_clip)
        self.robot = from_dict(RobotConfig, meta["robot"], prefix="robot")
        self.model = UVA(self.config)
        self.model.load_state_dict(load_file(str(self.root / "model.safetensors")))
        self.model.eval().to(self.device, torch.bfloat16 if self.precision == "bf16" else torch.float32)
        self.vae = load_vae(self.root / meta["vae"]["file"], device=self.device)  # checks its identity file
        self.vae_precision = meta["vae"].get("precision", "fp32")  # bundles before it was recorded: fp32
        vae_meta = json.loads((self.root / meta["vae"]["file"]).with_suffix(".json").read_text())
        if vae_meta.get("identity") != meta["vae"]["identity"]:
            raise ValueError(f"policy bundle {self.root}: VAE identity {vae_meta.get('identity')} is not the "
                             f"training VAE {meta['vae']['identity']}")
        w = meta["window"]
        self.num_history, self.frame_stride = int(w["num_history"]), int(w["frame_stride"])
        self.action_step = control_steps_per_action(meta)
        self.control_hz = float(meta.get("control_hz") or self.robot.control_hz)
        self.image_size = int(meta["image_size"])
        self.sampling_steps = int(sampling_steps or meta["sampling_steps"])
        # scale of the noise added at each reverse step after the initial draw (1 = the learned distribution)
        self.temperature = float(meta.get("temperature", 1.0) if temperature is None else temperature)
        if self.sampling_steps < 1 or self.temperature < 0:
            raise ValueError(f"policy bundle {self.root}: sampling_steps must be >= 1 and temperature >= 0, "
                             f"got {self.sampling_steps} and {self.temperature}")
        self.observation = dict(meta.get("observation") or {})
        if self.observation.get("resize", "short_side_crop") not in ("short_side_crop", "stretch_bilinear"):
            raise ValueError(f"policy bundle {self.root}: observation.resize {self.observation['resize']!r} is not "
                             f"short_side_crop or stretch_bilinear")
        # bounds of the returned actions (robot units), the values clipped to them so far
        self.action_limits = meta.get("action_limits")
        self.clipped = 0
        self.stats, self.normalization = meta["stats"], meta["normalization"]
        self.norm_mask = meta["norm_mask"]
        # relative chunks: {"origin": proprioception index per action dimension (-1 absolute), "stats"}
        self.relative = meta.get("relative")
        self.proprio_dim = int(self.config.proprio_dim)
        self.proprio_stats = meta.get("proprio_stats")
        if self.proprio_dim and not self.proprio_stats:
            raise ValueError(f"policy bundle {self.root}: the model takes proprioception but policy.json "
                             f"has no proprio_stats")
        if self.relative and not self.proprio_dim:
            raise ValueError(f"policy bundle {self.root}: relative chunks without proprioception")
        # the robot's embodiment row (a model trained on several robots)
        embodiments = list(self.config.embodiments)
        self.embodiment_id = embodiments.index(self.robot.name) if self.robot.name in embodiments else None
        if embodiments and self.embodiment_id is None:
            raise ValueError(f"policy bundle {self.root}: robot '{self.robot.name}' has no embodiment in the model "
                             f"({embodiments})")
        self.embodiment = (None if self.embodiment_id is None
                           else torch.tensor([self.embodiment_id], dtype=torch.long, device=self.device))
        # the camera of each view: one ("camera"), or, for a model of several views, "cameras"
        self.cameras = list(meta.get("cameras") or [meta.get("camera", "main")])
        if len(self.cameras) != self.config.num_views:
            raise ValueError(f"policy bundle {self.root}: {len(self.cameras)} cameras {self.cameras} for a model of "
                             f"{self.config.num_views} views")
        self.text_encoder = self._load_text_encoder()
        # instruction -> its tokens, on the policy's device ("": no instruction, zeros)
        self._lang_cache = {"": torch.zeros(1, self.config.lang_tokens, self.config.lang_dim, device=self.device)}
        self.generator = rng.generator(0, self.device)
        # a model wider than this robot (fine-tuned at the pretrained action width): the padding
        # is sampled as the zeros it was trained as
        a = self.robot.action_dim
        self.action_mask = (torch.arange(self.config.action_dim, device=self.device)[None] < a
                            if a < self.config.action_dim else None)
        self.sampler = None
        if self.backend != "none":
            from uva.sampler import ActionSampler

            self.sampler = ActionSampler(self.model, self.sampling_steps, batch_size=1, temperature=self.temperature,
                                         backend=self.backend, embodiment=self.embodiment_id, action_dims=a)

    def _load_text_encoder(self):
        """The encoder that embedded the training instructions (None: the model takes no language)."""
        from uva_io.text import load_text_encoder

        if not self.config.lang_dim:
            return None
        text = self.meta.get("text_encoder") or dict(self.config.text_encoder)
        if not text.get("spec"):
            raise ValueError(f"policy bundle {self.root}: the model takes language but names no text encoder")
        spec = f"transformers:{self.root / text['folder']}" if text.get("folder") else text["spec"]
        encoder = load_text_encoder(spec, self.config.lang_tokens)
        if encoder.identity != text["identity"] or encoder.dim != self.config.lang_dim:
            raise ValueError(f"policy bundle {self.root}: text encoder {spec} is {encoder.identity} "
                             f"({encoder.dim}-d), the model was trained on {text['identity']} ({self.config.lang_dim}-d)")
        return encoder

    def embed_instruction(self, instruction: str | None) -> torch.Tensor | None:
        """(1, lang_tokens, lang_dim) token vectors of an instruction (zeros for none); None for a
        model without language."""
        if self.text_encoder is None:
            if instruction:
                raise ValueError("this policy was trained without language: it takes no instruction")
            return None
        instruction = instruction or ""
        if instruction not in self._lang_cache:
            self._lang_cache[instruction] = torch.from_numpy(self.text_encoder.encode([instruction])).to(self.device)
        return self._lang_cache[instruction]

    # -- runner interface ----------------------------------------------------------------
    @property
    def num_obs(self) -> int:
        return (self.num_history - 1) * self.frame_stride + 1

    def reset(self, seed: int = 0) -> None:
        self.generator = rng.generator(seed, self.device)

    def __call__(self, obs: dict, num_actions: int) -> np.ndarray:
        frames = np.asarray(obs["image"])[:: self.frame_stride][-self.num_history:]
        proprio = None
        if self.proprio_dim:
            state = obs["proprio"] if "proprio" in obs else obs["agent_pos"]
            proprio = np.asarray(state, dtype=np.float32)[:: self.frame_stride][-self.num_history:]
        # the task's instruction, for a model that takes language (one without ignores it)
        instruction = obs.get("instruction") if self.text_encoder is not None else None
        return self.predict(frames, proprio, instruction=instruction).astype(np.float32)

    # -- API -----------------------------------------------------------------------------
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (1, N, C, h, w) latents, exactly as the encode job stores them."""
        from uva_io.vae_bundle import encode_frames
        from uva_io.video import resize_center_crop

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        if self.observation.get("resize") == "stretch_bilinear":  # an imported model's own pipeline
            return self._encode_stretched(frames)
        z = encode_frames(self.vae, resize_center_crop(frames, self.image_size), precision=self.vae_precision)
        return torch.from_numpy(z).float().unsqueeze(0)

    @torch.no_grad()
    def _encode_stretched(self, frames: np.ndarray) -> torch.Tensor:
        """The UVA reference's observation pipeline: [0, 1] frames stretched to the image size
        (bilinear, no crop), scaled to [-1, 1], the VAE posterior mean in float32."""
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        z = self.vae.encode((x * 255.0) / 127.5 - 1)
        return z.float().cpu().unsqueeze(0)

    def encode_views(self, frames) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames of one camera ((N, H, W, 3) uint8), or a mapping camera -> frames, to the model's
        history: (1, N, C, h, w) for a one-view model, (1, N, V, C, h, w) and the view mask (1, V)
        for several views (a camera missing from the mapping is an absent view)."""
        if not isinstance(frames, dict):
            if self.config.num_views > 1:
                raise ValueError(f"this policy sees {self.config.num_views} cameras: pass {{camera: frames}} for "
                                 f"{', '.join(self.cameras)}")
            return self.encode(frames), None
        unknown = sorted(set(frames) - set(self.cameras))
        if unknown:
            raise ValueError(f"cameras {unknown} are not this policy's ({', '.join(self.cameras)})")
        if self.config.num_views == 1:
            return self.encode(frames[self.cameras[0]]), None
        have = [c for c in self.cameras if c in frames]
        if not have:
            raise ValueError(f"pass frames of at least one of the cameras {', '.join(self.cameras)}")
        lats = {c: self.encode(frames[c]) for c in have}
        first = lats[have[0]]
        views = [lats.get(c, torch.zeros_like(first)) for c in self.cameras]
        mask = torch.tensor([[c in lats for c in self.cameras]])
        return torch.stack(views, 2), mask

    @torch.no_grad()
    def predict_normalized(self, history: torch.Tensor, generator: torch.Generator | None = None,
                           proprio: torch.Tensor | None = None, view_mask: torch.Tensor | None = None,
                           lang: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> np.ndarray:
        """(1, num_history, C, h, w) latents [, (1, num_history, P) normalized proprioception]
        [, (1, lang_tokens, lang_dim) instruction tokens] -> (action_horizon, action_dim)
        model-unit actions. ``generator`` must be on the policy's
        device (``uva.rng.generator(seed, policy.device)``); ``noise`` (sampling_steps, 1, H * A)
        supplies every draw instead (the start, then each step's), e.g. to compare with other code."""
        g = generator if generator is not None else self.generator
        history = history.to(self.device)
        proprio = None if proprio is None else proprio.to(self.device)
        view_mask = None if view_mask is None else view_mask.to(self.device)
        lang = None if lang is None else lang.to(self.device)
        if self.sampler is not None and noise is None:
            out = self.sampler(history, proprio, generator=g, view_mask=view_mask, lang=lang)
        else:
            out = self.model.predict_action(history, num_steps=self.sampling_steps, generator=g, proprio=proprio,
                                            temperature=self.temperature, embodiment=self.embodiment,
                                            view_mask=view_mask, lang=lang, action_mask=self.action_mask,
                                            noise=None if noise is None else noise.to(self.device))
        return out[0].float().cpu().numpy()

    def normalize_proprio(self, proprio: np.ndarray) -> torch.Tensor:
        """(N, P) robot-unit states -> (1, N, P) model units, as the training data were."""
        from pipeline.robots import normalize_actions

        state = np.asarray(proprio, dtype=np.float32)
        if state.ndim != 2 or state.shape[1] != self.proprio_dim:
            raise ValueError(f"proprio must be (N, {self.proprio_dim}) "
                             f"({', '.join(self.robot.proprio_names)}), got {state.shape}")
        norm = normalize_actions(state, self.proprio_stats, self.normalization)
        return torch.from_numpy(norm.astype(np.float32)).unsqueeze(0)

    def predict(self, frames, proprio: np.ndarray | None = None,
                generator: torch.Generator | None = None, instruction: str | None = None,
                noise: torch.Tensor | None = None) -> np.ndarray:
        """(num_history, H, W, 3) uint8 frames, oldest first, or a mapping camera -> such frames
        (a model of several views; cameras as in the robot's registry entry, a missing one is an
        absent view) [, (num_history, P) robot states at those frames, for a model that takes
        proprioception] [, the instruction, for a model that takes language] -> (K, action_dim)
        robot-unit actions."""

        def last(x: np.ndarray) -> np.ndarray:  # the start of an episode: repeat the first frame
            x = np.asarray(x)
            if len(x) < self.num_history:
                x = np.concatenate([np.repeat(x[:1], self.num_history - len(x), 0), x])
            return x[-self.num_history:]

        frames = {c: last(f) for c, f in frames.items()} if isinstance(frames, dict) else last(frames)
        state = None
        if self.proprio_dim:
            if proprio is None:
                raise ValueError(f"this policy takes proprioception: pass proprio "
                                 f"({', '.join(self.robot.proprio_names)}) for each frame")
            proprio = np.asarray(proprio, dtype=np.float32)
            if len(proprio) < self.num_history:
                proprio = np.concatenate([np.repeat(proprio[:1], self.num_history - len(proprio), 0), proprio])
            state = self.normalize_proprio(proprio[-self.num_history:])
        history, view_mask = self.encode_views(frames)
        norm = self.predict_normalized(history, generator, state, view_mask, self.embed_instruction(instruction),
                                       noise)
        actions = self.bound(self.to_robot_units(norm, None if proprio is None else proprio[-1]))
        return np.repeat(actions, self.action_step, axis=0)  # one row per control step

    def bound(self, actions: np.ndarray) -> np.ndarray:
        """Actions clipped to the bundle's limits (the robot's, else the data's range with a
        margin); each clipped value is counted (``clipped``) and the call logged."""
        if not self.action_limits:
            return actions
        lo, hi = np.asarray(self.action_limits["low"]), np.asarray(self.action_limits["high"])
        out = np.clip(actions, lo, hi)
        n = int((out != actions).sum())
        if n:
            self.clipped += n
            excess = float(np.max(np.maximum(actions - hi, lo - actions)))
            log.warning("policy %s: %d action value(s) outside the limits (%s) clipped, by up to %.4g; %d so far",
                        self.root, n, self.action_limits.get("from", "bundle"), excess, self.clipped)
        return out

    def to_robot_units(self, norm: np.ndarray, last_state: np.ndarray | None = None) -> np.ndarray:
        """(H, >= action_dim) model-unit chunk -> (H, action_dim) robot units; a relative chunk is
        measured from ``last_state`` (P,), the robot's state at the last history frame."""
        from pipeline.robots import chunk_origin, unnormalize_actions

        norm = np.asarray(norm)[:, : self.robot.action_dim]
        if not self.relative:
            return unnormalize_actions(norm, self.stats, self.normalization, self.norm_mask)
        if last_state is None:
            raise ValueError("this policy predicts chunks relative to the robot's state: pass its proprio")
        offsets = unnormalize_actions(norm, self.relative["stats"], self.normalization, self.norm_mask)
        return offsets + chunk_origin(np.asarray(last_state, np.float64)[None], self.relative["origin"])


def load_policy(bundle: str | Path, device: str = "cpu", sampling_steps: int | None = None,
                temperature: float | None = None, backend: str = "auto", precision: str = "auto",
                action_clip: float | None = None) -> UVAPolicy:
    return UVAPolicy(bundle, device=device, sampling_steps=sampling_steps, temperature=temperature,
                     backend=backend, precision=precision, action_clip=action_clip)
