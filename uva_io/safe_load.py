"""Read torch checkpoints written by other code without running any of their code.

``torch.load(weights_only=False)``, which MAR's and the UVA reference's loaders use, calls
whatever a pickle names: a downloaded file can run anything. Here every global a pickle names
goes through an allow-list of data types:

- tensors and their storages, ``OrderedDict``, ``torch.Size``, dtypes, numpy arrays and scalars;
- ``argparse.Namespace`` (MAR's ``args``), paths, ``typing.Any``;
- OmegaConf containers (the UVA workspace's ``cfg``) are read as plain data: their classes are
  replaced by inert stand-ins that only hold state, and ``plain()`` turns them into dicts and
  lists (``${a.b}`` references resolved);
- byte strings (the workspace's dill ``pickles``) stay bytes: never unpickled.

Any other global is refused with ``UnsafeCheckpoint`` naming it, before it is looked up.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import pickle
import re
import types
from pathlib import Path

import torch


class UnsafeCheckpoint(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list."""


class _State:
    """An inert stand-in: keeps the state a pickle gives it, runs nothing."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__["_state"] = state if isinstance(state, dict) else {"_value": state}


def _stand_in(qualname: str) -> type:
    return type(qualname.rpartition(".")[2], (_State,), {"__module__": "uva_io.safe_load.stand_in",
                                                         "qualname": qualname})


_OMEGACONF = {f"omegaconf.{m}": names for m, names in {
    "dictconfig": ("DictConfig",), "listconfig": ("ListConfig",),
    "nodes": ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode",
              "EnumNode", "ValueNode", "InterpolationResultNode"),
    "base": ("ContainerMetadata", "Metadata", "Node", "Box", "Container"),
}.items()}
_STAND_INS = {(mod, name): _stand_in(f"{mod}.{name}") for mod, names in _OMEGACONF.items() for name in names}
_STAND_INS[("typing", "Any")] = _stand_in("typing.Any")


def _allowed() -> dict[tuple[str, str], object]:
    import numpy as np

    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): getattr(torch._utils, "_rebuild_tensor_v3", None),
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("argparse", "Namespace"): argparse.Namespace,
        ("pathlib", "PosixPath"): Path, ("pathlib", "WindowsPath"): Path, ("pathlib", "PurePosixPath"): Path,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
        ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
        ("builtins", "str"): str, ("builtins", "int"): int, ("builtins", "float"): float,
        ("builtins", "bool"): bool, ("builtins", "bytes"): bytes, ("builtins", "object"): object,
        ("builtins", "NoneType"): type(None), ("copyreg", "_reconstructor"): _reconstructor,
        ("_codecs", "encode"): _latin1,
        ("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray,
    }
    import importlib

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = _numpy_scalar
    for mod in ("numpy", "numpy.dtypes"):
        for name in ("Float32DType", "Float64DType", "Int64DType", "Int32DType", "BoolDType", "UInt8DType",
                     "Float16DType"):
            if hasattr(np.dtypes, name):
                allowed[(mod, name)] = getattr(np.dtypes, name)
    for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                 "complex64", "complex128"):
        allowed[("torch", name)] = getattr(torch, name)
    return {k: v for k, v in allowed.items() if v is not None}


def _latin1(text, encoding="utf-8"):
    """_codecs.encode as protocol 2 pickles bytes with: text -> bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafeCheckpoint(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not plain bytes")
    return text.encode(encoding)


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpoint(f"numpy scalar of dtype {dtype!r} is not plain data")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _reconstructor(cls, base, state):
    """copyreg._reconstructor for the allowed plain types only (an old protocol's objects)."""
    if cls not in (object, dict, list, tuple, set) and not (isinstance(cls, type) and issubclass(cls, _State)):
        raise UnsafeCheckpoint(f"copyreg._reconstructor of {cls!r} is not on the allow-list")
    return cls.__new__(cls) if base is object else base.__new__(cls, state)


_ALLOWED: dict | None = None


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        if module in ("__builtin__", "copy_reg"):  # protocol 2 (torch.save's) names Python 2's modules
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _STAND_INS:
            return _STAND_INS[key]
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise UnsafeCheckpoint(f"the pickle names {module}.{name}, which is not on the allow-list of data "
                               f"types; nothing from the file was run")


# what torch.load takes as ``pickle_module``
SAFE_PICKLE = types.SimpleNamespace(Unpickler=_Unpickler, load=lambda f, **kw: _Unpickler(f, **kw).load(),
                                    __name__="uva_io.safe_load")


def load_checkpoint(path: str | Path) -> object:
    """The object a torch checkpoint holds, tensors on the CPU, read through the allow-list.
    Raises ``UnsafeCheckpoint`` naming a global outside it, ``ValueError`` for a file that is not a
    torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=SAFE_PICKLE)
    except UnsafeCheckpoint as e:
        raise UnsafeCheckpoint(f"checkpoint {path}: {e}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"checkpoint {path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e


_REF = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def plain(obj, root=None):
    """Stand-ins and Namespaces -> dicts and lists, OmegaConf ``${a.b}`` references resolved
    against the root container (others kept as their text)."""
    top = _plain(obj)
    return _resolve(top, top if root is None else root)


def _plain(obj):
    if isinstance(obj, _State):
        state = obj.__dict__.get("_state", {})
        kind = type(obj).__name__
        if kind in ("DictConfig", "ListConfig"):
            content = state.get("_content")
            if isinstance(content, dict):
                return {str(k): _plain(v) for k, v in content.items()}
            if isinstance(content, list):
                return [_plain(v) for v in content]
            return content  # None or a "???" / "${...}" string
        if "_val" in state:  # a value node
            return _plain(state["_val"])
        return {k: _plain(v) for k, v in state.items() if not k.startswith("_")}
    if isinstance(obj, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _resolve(obj, root, depth: int = 0):
    if depth > 32:
        raise ValueError("configuration references nest deeper than 32 levels (a cycle?)")
    if isinstance(obj, str):
        m = _REF.match(obj)
        if not m:
            return obj
        node = root
        for part in m.group(1).split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return obj  # an unknown reference stays as written
        return _resolve(node, root, depth + 1)
    if isinstance(obj, dict):
        return {k: _resolve(v, root, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, root, depth) for v in obj]
    return obj
