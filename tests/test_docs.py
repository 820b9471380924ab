"""The README and docs/ match the code: links resolve, config keys exist, marked snippets run.

Blocks fenced as ```` ```bash run ```` or ```` ```python run ```` are executed (in a temporary folder, with
the repository's ``configs/`` reachable as ``configs/``, a small exported encoder as ``encoder.safetensors``
and a real image file ``image.png``); keep them to what takes a few seconds. Every other ``openjepa``
command line in the docs is at least parsed by the CLI's argument parser.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from openjepa.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = {f.name for f in fields(Config)}


def _blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve_inside_the_repository(doc):
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: link {target} leaves the repository"
        assert path.exists(), f"{doc.name}: link {target} does not resolve"
    assert "../shared" not in text and "shared/spec" not in text, f"{doc.name} points at internal notes"


def _key_exists(key: str) -> bool:
    obj: object = Config()
    for part in key.split("."):
        part = re.sub(r"\[\d+\]$", "", part)
        if isinstance(obj, list):
            obj = obj[0] if obj else None
        if not is_dataclass(obj) or part not in {f.name for f in fields(obj)}:
            return False
        obj = getattr(obj, part)
    return True


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_config_keys_named_in_the_docs_exist(doc):
    text = doc.read_text()
    candidates = set(re.findall(r"(?<![\w./-])([a-z_]+(?:\.[a-z_0-9]+(?:\[\d+\])?)+)(?==|`|:\s)", text))
    files = (".py", ".md", ".yaml", ".json", ".jsonl", ".txt", ".png", ".pt", ".safetensors", ".csv", ".sqlite")
    keys = {k for k in candidates if k.split(".")[0] in SECTIONS and not k.endswith(files)}
    missing = sorted(k for k in keys if not _key_exists(k))
    assert not missing, f"{doc.name} names config keys that do not exist: {missing}"


def _openjepa_lines(body: str) -> list[str]:
    lines, buf = [], ""
    for raw in body.splitlines():
        line = raw.split("  #")[0].rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line = (buf + line).strip()
        buf = ""
        if line.startswith("openjepa "):
            lines.append(line)
    return lines


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_parse(doc):
    from openjepa.cli import build_parser

    parser = build_parser()
    for info, body in _blocks(doc.read_text()):
        if not info.startswith(("bash", "sh", "")):
            continue
        for line in _openjepa_lines(body):
            if any(t in line for t in ("|", "<", "[--", "...", "--help")):
                continue  # a synopsis with placeholders, or help (which exits)
            argv = shlex.split(line)[1:]
            try:
                _, extra = parser.parse_known_args(argv)
            except SystemExit as err:
                raise AssertionError(f"{doc.name}: `{line}` does not parse") from err
            assert all("=" in e and not e.startswith("-") for e in extra), f"{doc.name}: `{line}`: unknown {extra}"


def _runnable() -> list[tuple[str, str, str]]:
    out = []
    for doc in DOCS:
        for info, body in _blocks(doc.read_text()):
            words = info.split()
            if words[1:2] == ["run"] and words[0] in ("bash", "python"):
                out.append((doc.name, words[0], body))
    return out


def _fixtures(folder: Path) -> None:
    """What the runnable snippets may read: the configs, an exported encoder and an image file."""
    import numpy as np
    from PIL import Image

    from openjepa.checkpoints import save_encoder
    from openjepa.models.vit import VisionTransformer

    (folder / "configs").symlink_to(ROOT / "configs")
    encoder = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    save_encoder(encoder, folder / "encoder.safetensors", {"source": "test"})
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "image.png")


@pytest.mark.parametrize(("doc", "lang", "body"), _runnable(), ids=lambda v: v if len(v) < 40 else None)
def test_marked_snippets_run(doc, lang, body, tmp_path):
    _fixtures(tmp_path)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = ["bash", "-euo", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{doc}: snippet failed:\n{body}\n{proc.stderr[-2000:]}"
