"""The public surface: complete, sorted ``__all__``; ``protocol`` stays pure."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import circles
import protocol

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [protocol, circles])
def test_all_is_complete_and_sorted(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert len(set(names)) == len(names)
    assert names == sorted(names, key=str.lower)
    public = {n for n in vars(module) if not n.startswith("_")} - {"annotations"}
    # Every public attribute that is not a submodule is exported, and vice versa.
    public = {n for n in public if not isinstance(getattr(module, n), type(sys))}
    assert public == set(names)


@pytest.mark.parametrize("package", ["protocol", "circles"])
def test_init_only_reexports(package: str) -> None:
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    for node in tree.body:
        ok = isinstance(node, ast.ImportFrom | ast.Import)
        ok = ok or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ok = ok or (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and ast.unparse(node).startswith("__all__")
        )
        assert ok, f"{package}/__init__.py does more than re-export: {ast.unparse(node)}"


def test_protocol_imports_no_io() -> None:
    code = (
        "import sys, protocol\n"
        "bad = {'trio', 'libp2p', 'sqlite3', 'socket', 'asyncio', 'circles', 'threading'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    # socket/threading may come in through the standard library's own imports;
    # what matters is that protocol's sources never import I/O modules.
    assert "trio" not in out and "libp2p" not in out and "sqlite3" not in out
    assert "circles" not in out


def test_protocol_sources_are_sans_io() -> None:
    forbidden_modules = {"trio", "libp2p", "sqlite3", "socket", "asyncio", "threading",
                         "circles", "random", "time", "datetime", "os", "secrets"}
    for path in (ROOT / "protocol").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert not set(names) & forbidden_modules, f"{path.name} imports {names}"
