"""UVA model library: VAE, joint video-action model, diffusion heads, masked modes.

Pure PyTorch (+ einops): no distributed, tracking or data-loading code lives here.
"""

from uva.config import MODEL_SIZES, UVAConfig, model_config
from uva.model import UVA, count_parameters
from uva.modes import MODE_NAMES, MODES

__all__ = ["UVA", "UVAConfig", "MODEL_SIZES", "model_config", "count_parameters", "MODES", "MODE_NAMES"]
