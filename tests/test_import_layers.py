"""The packages import in one direction only, so each layer can be used (and shipped) without the
ones above it:

    uva  <-  uva_io  <-  uva_sim  <-  preprocessing
                                  <-  pipeline

uva/ is the model (torch and einops only, tests/uva/test_imports.py); uva_io/ holds the formats
and I/O both jobs share; uva_sim/ the simulators. preprocessing/ and pipeline/ never import each
other. Imports inside functions count too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"uva", "uva_io", "uva_sim", "preprocessing", "pipeline", "benchmarks", "tests"}
ALLOWED = {
    "uva": {"uva"},
    "uva_io": {"uva", "uva_io"},
    "uva_sim": {"uva_io", "uva_sim"},
    "preprocessing": {"uva", "uva_io", "uva_sim", "preprocessing"},
    "pipeline": {"uva", "uva_io", "uva_sim", "pipeline"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = [f"{p.relative_to(ROOT)} imports {name}" for p in files for name in sorted(imported_packages(p))
           if name in OURS and name not in ALLOWED[package]]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from pipeline.train import train\n")
    assert "pipeline" in imported_packages(f) and "pipeline" not in ALLOWED["preprocessing"]


def test_no_sys_path_edits_in_entry_points():
    """Every job starts as a console script of the installed package, not with sys.path edits."""
    offenders = [str(p.relative_to(ROOT)) for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py")
                 if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not offenders, offenders
