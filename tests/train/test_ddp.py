"""2-process DDP (gloo on CPU, launched by torchrun) equals one process on the same global batch."""

import os
import subprocess
import sys

import torch

from openjepa.config import load_config
from openjepa.train.checkpoint import load_checkpoint
from openjepa.train.logger import read_metrics
from openjepa.train.loop import train


def test_two_process_ddp_matches_single_process(tmp_path, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith("data.batch_size")] + ["train.max_steps=4"]
    single = load_config(None, [*overrides, "data.batch_size=8"])
    train(single, tmp_path / "single")

    cfg_file = tmp_path / "empty.yaml"
    cfg_file.write_text("{}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "openjepa", "pretrain", str(cfg_file), "--out", str(tmp_path / "ddp"), "--no-eval",
        *overrides, "data.batch_size=4",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr

    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "ddp")
    assert a["step"] == b["step"] == 4 and b["world_size"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    la = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl")]
    assert len(la) == len(lb) == 2
    for x, y in zip(la, lb):
        assert abs(x - y) <= 1e-5 * max(1.0, abs(x))
    # Equal weights must not be the trivial "nothing was trained": they moved away from the init.
    from openjepa.methods.base import build_method

    torch.manual_seed(single.train.seed)
    init = build_method(single, a["total_steps"]).state_dict()
    key = "encoder.blocks.0.attn.qkv.weight"
    assert not torch.allclose(init[key], a["model"][key])
