"""The architecture rules that a reader relies on: layers (lint-imports), no import cycles, a generic loop."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "openjepa"


def _import_graph() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("openjepa")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    # Function-level imports count: a cycle hidden in a function is still a cycle.
    assert _cycles(_import_graph()) == []


def test_no_import_cycles_between_packages():
    edges: dict[str, set[str]] = {}
    for src, targets in _import_graph().items():
        a = ".".join(src.split(".")[:2])
        for t in targets:
            b = ".".join(t.split(".")[:2])
            if a != b and a != "openjepa" and b != "openjepa":
                edges.setdefault(a, set()).add(b)
    assert _cycles(edges) == []


def test_layer_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=SRC.parents[1])
    assert proc.returncode == 0, proc.stdout[-4000:]


def _code_words(path: Path) -> set[str]:
    """Identifiers and string constants of a module, without docstrings and comments."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
    return words


def test_training_loop_is_generic_and_short():
    loop = SRC / "train" / "loop.py"
    assert len(loop.read_text().splitlines()) <= 300
    forbidden = ("image", "video", "ijepa", "tcjepa", "vjepa", "salt", "vpixel", "clip", "multiblock", "tube",
                 "mask", "ema", "momentum", "teacher", "caption")
    # Whole words only (`clip_grad` is gradient clipping, not the CLIP method).
    tokens = {w: set(re.split(r"[^a-z0-9]+", w.lower().replace("clip_grad", ""))) for w in _code_words(loop)}
    hits = sorted(w for w, toks in tokens.items() if toks & set(forbidden))
    assert hits == [], f"the loop names methods, modalities or mask kinds: {hits}"
