"""uva/ stays a pure model library: torch, einops and the standard library only."""

import ast
import sys
from pathlib import Path

ALLOWED = {"torch", "einops", "uva", "__future__"} | set(sys.stdlib_module_names)


def test_uva_imports_only_torch_and_einops():
    root = Path(__file__).resolve().parents[2] / "uva"
    bad = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in ALLOWED or n.startswith("torch.distributed")]
    assert not bad, bad
