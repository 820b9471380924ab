"""Helpers for the data tests: small image files written on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(
    path: Path, seed: int, size: tuple[int, int] = (20, 16), fmt: str | None = None
) -> np.ndarray:
    """Writes a random RGB image and returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def write_truncated_png(path: Path, seed: int = 99) -> None:
    """A PNG cut in the middle of its image data: opens fine, fails on decode."""
    write_image(path, seed, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def image_writer():
    return write_image


@pytest.fixture
def truncated_writer():
    return write_truncated_png
