"""Shared test settings: a tiny model on tiny scenes so each training run takes seconds."""

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

TINY = [
    "model.arch=vit_pico",
    "model.patch_size=8",
    "model.pred_dim=48",
    "model.pred_depth=2",
    "data.image_size=32",
    "data.train_size=64",
    "data.batch_size=8",
    "mask.min_keep=2",
    "mask.target_scale=[0.1,0.2]",
    "optim.warmup_epochs=1",
    "train.epochs=2",
    "train.log_every=2",
    "train.ckpt_every=4",
    "train.rankme_every=0",
    "train.progress=false",
    "train.tensorboard=false",
    "eval.after_pretrain=false",
]


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread for the whole suite: results do not depend on the machine's load (the thread count
    changes float summation order, and bitwise resume / DDP tests compare runs), and on a shared 2-core
    machine one thread is also the fastest."""
    import os

    import torch

    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
    if old is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Caches (text embeddings, features, supervised ceilings) go to a temporary folder, not ~/.cache."""
    import os

    old = os.environ.get("OPENJEPA_CACHE")
    os.environ["OPENJEPA_CACHE"] = str(tmp_path_factory.mktemp("openjepa-cache"))
    yield
    if old is None:
        os.environ.pop("OPENJEPA_CACHE", None)
    else:
        os.environ["OPENJEPA_CACHE"] = old


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch, numpy, random), so a test that draws
    unseeded data behaves the same on every run: a failure reproduces, and CI cannot fail on an unlucky
    draw that the developer's runs never saw."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def load_script():
    """``load_script("name")``: imports ``scripts/name.py`` (the scripts are not a package) as a module."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod

    return load
