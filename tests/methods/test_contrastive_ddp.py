"""Two gloo processes: the gathered contrastive loss is the single-process loss on the concatenated batch, and
DDP-averaged gradients of the CLIP module equal the single-process gradients on the whole batch (both losses).

One launch of two processes runs every scenario, so the test pays for start-up once. The ranks are this file
run as a script (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in the environment, as torchrun sets
them) rather than ``torch.multiprocessing.spawn``: spawn pickles the worker by module name, which under pytest's
importlib mode is ``tests.methods...`` and cannot be imported when pytest runs from outside the repository, and
a subprocess can be given a timeout so a collective that hangs fails the test instead of the whole suite.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from openjepa.config import load_config
from openjepa.methods.clip import CLIP
from openjepa.methods.contrastive_losses import clip_loss, gather_pairs, siglip_loss

WORLD = 2
LOCAL_B = 4
TEXT_DIM = 12
SMALL = [
    "method=clip", "model.arch=vit_pico", "model.patch_size=8", "data.image_size=32", "clip.dim=24",
    f"text.dim={TEXT_DIM}",
]
# name -> (loss kind, which images of the global batch have no caption)
SCENARIOS = {
    "clip": ("clip", [2, 5]),  # one excluded image on each rank
    "siglip": ("siglip", [1, 6, 7]),
    "clip_rank1_empty": ("clip", [4, 5, 6, 7]),  # rank 1 has no caption at all; its images still get gradients
    "siglip_all_empty": ("siglip", list(range(8))),  # nobody has a caption: zero loss, no hang
}


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(WORLD * LOCAL_B, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(WORLD * LOCAL_B, 8, generator=g), dim=-1)
    valid = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    return img, txt, valid


def _global_batch(no_caption, seed=1):
    g = torch.Generator().manual_seed(seed)
    b, n, s = WORLD * LOCAL_B, 2, 5
    caption_mask = torch.ones(b, n, dtype=torch.bool)
    caption_mask[no_caption] = False
    return {
        "image": torch.randn(b, 3, 32, 32, generator=g),
        "text_emb": torch.randn(b, n, s, TEXT_DIM, generator=g).half(),
        "text_mask": torch.rand(b, n, s, generator=g) > 0.2,
        "caption_mask": caption_mask,
    }


def _slice(batch, rank):
    return {k: v[rank * LOCAL_B : (rank + 1) * LOCAL_B] for k, v in batch.items()}


def _model(kind):
    torch.manual_seed(0)  # identical init on every rank and in the reference
    return CLIP(load_config(None, [*SMALL, f"clip.loss={kind}"]), total_steps=10)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _worker(out_dir):
    """One rank: reads its place in the job from the environment, writes what the tests compare."""
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # env:// rendezvous: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    try:
        out = {}
        # pure functions on gathered features
        img, txt, valid = _features()
        sl = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        li, lt = img[sl].clone().requires_grad_(), txt[sl].clone().requires_grad_()
        gi, gt, gv = gather_pairs(li, lt, valid[sl])
        scale, bias = torch.tensor(9.0), torch.tensor(-4.0)
        loss = clip_loss(gi, gt, scale, gv) + siglip_loss(gi, gt, scale, bias, gv)
        loss.backward()
        out["functional"] = {"loss": loss.detach(), "valid": gv, "img_grad": li.grad, "txt_grad": lt.grad}
        # the module under DDP, one scenario per loss / masking pattern
        for name, (kind, no_caption) in SCENARIOS.items():
            model = torch.nn.parallel.DistributedDataParallel(_model(kind))
            loss, metrics = model(_slice(_global_batch(no_caption), rank), 0)
            loss.backward()
            out[name] = {"loss": loss.detach(), "metrics": metrics, "grads": _grads(model.module)}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("contrastive_ddp")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(WORLD)}
    env["OMP_NUM_THREADS"] = "1"
    env.pop("LOCAL_RANK", None)
    # Output to files, not pipes: a rank blocked on a full pipe would stall its peer inside a collective.
    logs = [out_dir / f"rank{r}.log" for r in range(WORLD)]
    procs = []
    for r in range(WORLD):
        with open(logs[r], "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), str(out_dir)],
                    env={**env, "RANK": str(r)}, stdout=log, stderr=subprocess.STDOUT,
                )
            )
    try:
        for p in procs:
            p.wait(timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r].read_text()[-3000:]}"
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_gathered_loss_on_each_rank_equals_single_process_loss(ranks):
    img, txt, valid = _features()
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale, bias = torch.tensor(9.0), torch.tensor(-4.0)
    loss = clip_loss(img, txt, scale, valid) + siglip_loss(img, txt, scale, bias, valid)
    loss.backward()
    for rank, out in enumerate(ranks):
        f = out["functional"]
        assert torch.equal(f["valid"], valid)
        torch.testing.assert_close(f["loss"], loss.detach(), rtol=1e-6, atol=1e-6)
        # Every rank holds the global loss, so the gather's backward (a sum over ranks) hands each slice
        # WORLD times its single-process gradient; DDP's averaging divides it back (next test).
        sl = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        torch.testing.assert_close(f["img_grad"], WORLD * img.grad[sl], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(f["txt_grad"], WORLD * txt.grad[sl], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_ddp_gradients_equal_single_process_gradients(ranks, name):
    kind, no_caption = SCENARIOS[name]
    model = _model(kind)
    loss, metrics = model(_global_batch(no_caption), 0)
    loss.backward()
    expected = _grads(model)
    if name == "siglip_all_empty":
        assert loss.item() == 0.0
    else:
        assert loss.item() > 0.1
    for rank, out in enumerate(ranks):
        got = out[name]
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-5, msg=f"rank {rank} loss")
        for k in ("acc_i2t", "logit_scale"):
            torch.testing.assert_close(got["metrics"][k], metrics[k], rtol=1e-5, atol=1e-5)
        assert set(got["grads"]) == set(expected)
        for k, g in expected.items():
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-5, atol=1e-5, msg=f"rank {rank} grad {k}")
    # the comparison is not trivially between zeros
    if name != "siglip_all_empty":
        assert expected["encoder.blocks.0.attn.qkv.weight"].abs().sum() > 0
        assert expected["logit_scale"].abs() > 0


if __name__ == "__main__":
    _worker(sys.argv[1])
