"""Adapting pretrained weights to a target robot: the rules fine-tuning loads checkpoints by.

- The architecture (widths, depths, frame layout) comes from the checkpoint (``model_config.json``
  beside its weights, or a bundle's ``policy.json``), so a recipe never guesses the model size.
- Robot layers (action embedding, action head, proprioception input) follow the robot: they keep
  their fresh init where the checkpoint's shapes differ or it lacks them, and the checkpoint's
  ones the model lacks are dropped. Any other difference is a checkpoint of another size or layout.
- The embodiment table keeps every pretrained robot's row; a target robot the pretraining did
  not see gets a new row (started at the mean of the others).
- The camera views follow the robot's cameras (its registry entry): a robot with fewer cameras
  than the pretrained views keeps the first views (one camera: no view slots at all, so it
  trains as fast as a one-view model), one with more gets new view embeddings.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from pipeline.weights import EMBODIMENTS, VIEW_POS, load_weights

# Parameters that follow the robot (action dimension and horizon, proprioception).
ROBOT_LAYERS = ("embed.action_proj.", "action_head.", "embed.proprio.")
# Fields that identify a registered model size (backbone and heads).
ARCH_FIELDS = ("width", "decoder_width", "encoder_depth", "decoder_depth", "num_heads", "head_width", "head_depth")
# Fields the robot and the recipe set, not the checkpoint.
ROBOT_FIELDS = ("num_history", "num_future", "action_horizon", "action_dim", "proprio_dim")
# Fields of how the model is trained or sampled, not of its weights: a recipe may set them
# (train.model.overrides) on top of the checkpoint's architecture.
TRAINING_FIELDS = ("dropout", "mask_kind", "mask_ratio_min", "mask_ratio_std", "lang_dropout", "action_clip",
                   "video_clip", "diffusion_batch_mul", "action_batch_mul", "grad_checkpointing")


def is_robot_layer(name: str) -> bool:
    return name.startswith(ROBOT_LAYERS)


def load_adapted(model: torch.nn.Module, state: dict, source, size: str) -> list[str]:
    """Load pretrained ``state`` into a model built for the target robot; returns the robot
    layers that were re-created (e.g. ``['action_head', 'embed.action_proj']``)."""
    fresh = load_weights(model, state, source, size, fresh_ok=is_robot_layer)
    names = {p.rstrip(".") for p in ROBOT_LAYERS for k in fresh if k.startswith(p)}
    if EMBODIMENTS in fresh:  # the target robot's embodiment row was added
        names.add("embed.embodiment")
    if VIEW_POS in fresh:  # view embeddings the checkpoint did not have (a robot with more cameras)
        names.add("embed.view_pos")
    return sorted(names)


def size_name(arch: dict) -> str:
    """The registered size an architecture matches (backbone and heads), or 'custom'."""
    from uva.config import MODEL_SIZES

    for name, cfg in MODEL_SIZES.items():
        ref = asdict(cfg)
        if all(arch.get(k) == ref[k] for k in ARCH_FIELDS):
            return name
    return "custom"


def model_overrides(arch: dict) -> dict:
    """The checkpoint's architecture as model overrides, without the fields the robot sets."""
    return {k: v for k, v in arch.items() if k not in ROBOT_FIELDS}
