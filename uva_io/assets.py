"""Files the code needs at run time, found from the installed package: configs and the default VAE.

``configs/`` (robots, recipes, preprocessing and pretraining configs) installs as the package
``uva_configs`` and ``artifacts/`` (the default VAE) as ``uva_artifacts``, so a non-editable
install works from any working directory. A path that exists as given always wins; otherwise a
relative path is looked up in the installed copy, with or without its leading ``configs/`` or
``artifacts/``:

    find_config("configs/finetune/default.yaml")   # ./configs/... if here, else the installed one
    find_config("robots/franka.yaml")
    find_artifact("artifacts/vae/vae-default-kl8.safetensors")
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _installed_root(package: str, folder: str) -> Path:
    """The installed data folder; the checkout's folder where the package is not installed."""
    try:
        return Path(str(importlib.resources.files(package)))
    except ModuleNotFoundError:
        return CHECKOUT / folder


def configs_root() -> Path:
    return _installed_root("uva_configs", "configs")


def artifacts_root() -> Path:
    return _installed_root("uva_artifacts", "artifacts")


def _find(path: str | Path, root: Path, folder: str, what: str) -> Path:
    given = Path(path)
    if given.exists():
        return given
    if not given.is_absolute():
        parts = given.parts[1:] if given.parts[:1] == (folder,) else given.parts
        candidate = root.joinpath(*parts) if parts else root
        if candidate.exists():
            return candidate
    raise ValueError(f"{what} '{path}' does not exist (nor under the installed {folder}, {root})")


def find_config(path: str | Path) -> Path:
    """A config file by path, or by its path under ``configs/`` in the installed package."""
    return _find(path, configs_root(), "configs", "config file")


def find_artifact(path: str | Path) -> Path:
    """An artifact (e.g. the default VAE bundle) by path, or under ``artifacts/`` when installed.
    For a VAE bundle either of its two files may be named; the lookup uses the one given."""
    return _find(path, artifacts_root(), "artifacts", "artifact")
