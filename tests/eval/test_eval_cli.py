"""``openjepa eval`` / ``features`` / ``compare`` end to end on generated labelled folders and a saved encoder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.checkpoints import save_encoder
from openjepa.errors import OpenJepaError
from openjepa.eval.baselines import PixelEncoder
from openjepa.eval.cli import add_compare, add_eval, add_features
from openjepa.eval.features import extract_features, read_features_file
from openjepa.eval.userdata import open_user_data
from openjepa.models.vit import VisionTransformer

COLORS = {"blue": (30, 30, 220), "red": (220, 30, 30)}
# Small probe settings: the data is tiny and the point is the plumbing (values are checked where they are
# unambiguous: red vs blue squares are separable from the pixels).
FAST = ["eval.attentive_epochs=3", "eval.probe_epochs=10"]


_CALLS = {"n": 0}


@pytest.fixture(autouse=True, scope="module")
def _environment():
    """One torch thread (the CLI sizes threads to the cores; on a shared CPU one is much faster for tiny
    models) and a count of every encoder forward pass (pretrained, random init, ceiling, raw pixels)."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        for cls in (VisionTransformer, PixelEncoder):
            def counted(self, *args, _forward=cls.forward, **kwargs):
                _CALLS["n"] += 1
                return _forward(self, *args, **kwargs)

            mp.setattr(cls, "forward", counted)
        yield
    torch.set_num_threads(threads)


def _count_forwards() -> dict[str, int]:
    _CALLS["n"] = 0
    return _CALLS


def run_cli(argv: list[str]) -> int:
    """The subcommands as ``openjepa`` runs them (parser, overrides after options, one-line errors)."""
    parser = argparse.ArgumentParser(prog="openjepa")
    sub = parser.add_subparsers(dest="command")
    add_eval(sub)
    add_features(sub)
    add_compare(sub)
    args, extra = parser.parse_known_args(argv)
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.handler(args) or 0)
    except (OpenJepaError, FileNotFoundError, ValueError) as err:
        print(f"openjepa: error: {err}")
        return 2


def square(path: Path, color: tuple[int, int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((32, 32, 3), 128, np.uint8)
    x, y = rng.integers(0, 20, size=2)
    img[y : y + 12, x : x + 12] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    for split, n in (("train", 12), ("val", 6)):
        for c, (name, color) in enumerate(COLORS.items()):
            for i in range(n):
                square(root / split / name / f"{i:03d}.png", color, (split == "val") * 500 + c * 100 + i)
    (root / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    torch.manual_seed(0)
    encoder = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    weights, _ = save_encoder(encoder, root / "enc.safetensors", {"method": "test", "step": 40})
    return {"root": root, "train": root / "train", "val": root / "val", "encoder": weights}


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run")
    argv = [
        "eval", str(data["encoder"]), *FAST, "--train", str(data["train"]), "--val", str(data["val"]),
        "--json", str(out / "eval.json"), "--cache", str(out / "cache"), "--ceiling-steps", "8", "--quiet",
    ]
    calls = _count_forwards()
    assert run_cli(argv) == 0
    return {"argv": argv, "report": json.loads((out / "eval.json").read_text()), "calls": calls.copy(), "dir": out}


def test_user_data_eval_reports_every_row_with_the_corrupt_file_skipped(first_run, capsys):
    rep = first_run["report"]
    for row in ("pretrained", "random_init", "pixels", "ceiling"):
        for probe in ("linear", "attentive", "knn"):
            assert set(rep[row][probe]) == {"class"}, (row, probe)
    assert rep["data"]["name"] == "user" and rep["data"]["classes"] == {"class": ["blue", "red"]}
    assert rep["pretrained"]["n_train"] == 24 and rep["pretrained"]["n_val"] == 12
    skipped = rep["data"]["skipped"]["train"]
    assert len(skipped) == 1 and "broken.png" in skipped[0] and rep["data"]["skipped"]["val"] == []
    assert rep["checkpoint"]["source"] == "openjepa-export" and rep["checkpoint"]["step"] == 40
    # The ceiling trained the requested steps (not the checkpoint's 40) and has its own heads.
    assert rep["ceiling"]["training"]["spec"]["steps"] == 8 and "class" in rep["ceiling"]["heads"]
    # Red vs blue squares: any of these features separate them.
    assert rep["pixels"]["linear"]["class"] >= 0.9 and rep["pretrained"]["linear"]["class"] >= 0.9
    assert first_run["calls"]["n"] > 0


def test_table_header_reports_the_skipped_file(data, tmp_path, capsys):
    argv = ["eval", str(data["encoder"]), *FAST, "--train", str(data["train"]), "--val", str(data["val"]),
            "--no-ceiling", "--no-pixels", "--no-baseline", "--cache", str(tmp_path), "--quiet"]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "unreadable files skipped: 1 train, 0 val" in out and "broken.png" in out
    assert "not calibrated" in out  # no ceiling: said, not hidden


def test_second_run_reads_every_feature_and_the_ceiling_from_the_cache(first_run):
    calls = _count_forwards()
    assert run_cli(first_run["argv"]) == 0
    assert calls["n"] == 0  # no encoder, pixel or ceiling forward pass: all cached
    again = json.loads((first_run["dir"] / "eval.json").read_text())
    assert again["ceiling"]["training"]["cached"]
    assert again["pretrained"]["linear"] == first_run["report"]["pretrained"]["linear"]


@pytest.mark.parametrize("layout", ["jsonl", "csv", "list"])
def test_jsonl_csv_and_list_layouts(data, tmp_path, layout):
    def write(split: str) -> Path:
        files = sorted((data[split]).rglob("*.png"))
        files = [f for f in files if f.name != "broken.png"]
        rows = [(f.relative_to(data["root"]).as_posix(), f.parent.name) for f in files]
        path = data["root"] / f"{split}-{layout}.{ {'jsonl': 'jsonl', 'csv': 'csv', 'list': 'txt'}[layout] }"
        if layout == "jsonl":
            path.write_text("".join(json.dumps({"image": f, "label": c}) + "\n" for f, c in rows))
        elif layout == "csv":
            path.write_text("image,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
        else:
            path.write_text("".join(f"{f} {c}\n" for f, c in rows))
        return path

    out = tmp_path / "eval.json"
    argv = ["eval", str(data["encoder"]), *FAST, "--train", str(write("train")), "--val", str(write("val")),
            "--json", str(out), "--no-ceiling", "--no-cache", "--quiet"]
    assert run_cli(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["pretrained"]["n_train"] == 24 and rep["data"]["skipped"] == {"train": [], "val": []}
    assert rep["pixels"]["linear"]["class"] >= 0.9


def test_a_val_class_absent_from_train_is_a_clear_error(data, tmp_path, capsys):
    val = tmp_path / "val"
    for name, color in {**COLORS, "green": (30, 220, 30)}.items():
        square(val / name / "0.png", color, 1)
    argv = ["eval", str(data["encoder"]), "--train", str(data["train"]), "--val", str(val), "--quiet"]
    assert run_cli(argv) == 2
    out = capsys.readouterr().out
    assert "class(es) green of label 'class' never occur in the train data" in out
    assert run_cli(["eval", str(data["encoder"]), "--train", str(data["train"])]) == 2
    assert "give both --train DATA and --val DATA" in capsys.readouterr().out


def test_cuda_asked_without_cuda_is_a_one_line_error(data, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    argv = ["eval", str(data["encoder"]), "--train", str(data["train"]), "--val", str(data["val"]), "--device", "cuda"]
    assert run_cli(argv) == 2
    assert "--device=cuda but no CUDA device" in capsys.readouterr().out


def test_features_command_round_trips(data, tmp_path, capsys):
    out = tmp_path / "feats.safetensors"
    argv = ["features", str(data["encoder"]), str(data["train"]), "--out", str(out), "--tokens", "--quiet"]
    assert run_cli(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 24 and summary["skipped"] == 1
    back = read_features_file(out)
    assert back["features"].shape == (24, 32) and back["tokens"].shape == (24, 16, 32)
    assert back["tokens"].dtype == torch.float16 and back["index"].dtype == torch.int64
    assert len(back["files"]) == 24 and all(Path(f).is_file() for f in back["files"])
    assert len(back["skipped"]) == 1 and "broken.png" in back["skipped"][0]
    assert back["meta"]["classes"] == {"class": ["blue", "red"]} and back["meta"]["checkpoint"]["step"] == 40
    # Labels follow the files: the class folder of each listed file.
    names = back["meta"]["classes"]["class"]
    assert [names[y] for y in back["labels"]["class"].tolist()] == [Path(f).parent.name for f in back["files"]]
    # The same numbers as extracting in Python.
    from openjepa.checkpoints import load_encoder

    direct = extract_features(load_encoder(data["encoder"]), open_user_data(data["train"], "image"), batch_size=8,
                              device="cpu", progress=False)
    torch.testing.assert_close(back["features"], direct["pooled"])
    assert direct["paths"] == back["files"]
    bad = run_cli(["features", str(data["encoder"]), str(data["train"]), "--out", str(tmp_path / "x.pt")])
    assert bad == 2


def test_compare_still_works_and_averages_runs_sharing_a_name(first_run, tmp_path, capsys):
    report = first_run["dir"] / "eval.json"
    copy = tmp_path / "run2" / "eval.json"
    copy.parent.mkdir()
    copy.write_text(report.read_text())
    assert run_cli(["compare", str(report), str(copy.parent), "--names", "seed-a", "seed-b",
                    "--out", str(tmp_path / "t.txt")]) == 0
    text = capsys.readouterr().out
    assert "seed-a" in text and "seed-b" in text and "raw pixels" in text and "sup. ceiling" in text
    assert (tmp_path / "t.txt").read_text().strip() == text.strip()
    assert run_cli(["compare", str(report), str(copy), "--names", "jepa", "jepa"]) == 0
    assert "mean±std over the runs" in capsys.readouterr().out
    assert run_cli(["compare", str(tmp_path)]) == 2
    assert "no evaluation report" in capsys.readouterr().out


def test_video_list_end_to_end_with_an_unreadable_video(tmp_path):
    from openjepa.data.video import write_video

    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for split, n in (("train", 4), ("val", 2)):
        for label, level in (("dark", 40), ("bright", 200)):
            for i in range(n):
                frames = np.clip(level + rng.integers(-20, 20, (8, 32, 32, 3)), 0, 255).astype(np.uint8)
                path = write_video(tmp_path / f"{split}-{label}-{i}.mp4", frames)
                lines[split].append(f"{path.name} {label}")
    (tmp_path / "junk.mp4").write_text("not a video")
    lines["train"].append("junk.mp4 dark")
    for split in lines:
        (tmp_path / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    torch.manual_seed(0)
    encoder = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_frames=4)
    weights, _ = save_encoder(encoder, tmp_path / "video-enc.safetensors", {"method": "test"})
    out = tmp_path / "eval.json"
    argv = ["eval", str(weights), *FAST, "data.frame_step=2", "--train", str(tmp_path / "train.txt"),
            "--val", str(tmp_path / "val.txt"), "--json", str(out), "--ceiling-steps", "3", "--no-cache", "--quiet"]
    assert run_cli(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["data"]["input"] == "video" and rep["config"]["num_clips"] == 2
    assert rep["pretrained"]["n_train"] == 8 and rep["pretrained"]["n_val"] == 4
    assert len(rep["data"]["skipped"]["train"]) == 1 and "junk.mp4" in rep["data"]["skipped"]["train"][0]
    assert rep["pixels"]["linear"]["class"] == 1.0  # dark vs bright: read off the pixels
    assert set(rep) >= {"random_init", "pixels", "ceiling"}


def test_eval_overrides_reach_the_probe_settings():
    from openjepa.config import Config
    from openjepa.config import apply_overrides as _apply_overrides
    from openjepa.errors import ConfigError
    from openjepa.eval.report import ProbeSettings

    cfg = Config()
    _apply_overrides(cfg, ["eval.seeds=[0,1,2]", "eval.attentive=false", "eval.attentive_epochs=5", "eval.knn_k=7"])
    settings = ProbeSettings.from_config(cfg)
    assert settings.seeds == (0, 1, 2) and not settings.attentive and settings.attentive_epochs == 5
    assert settings.knn_k == 7
    with pytest.raises(ConfigError, match="expected bool"):
        _apply_overrides(cfg, ["eval.pixels=3"])
    with pytest.raises(ConfigError, match="unknown config key 'eval.nope'"):
        _apply_overrides(cfg, ["eval.nope=1"])


def test_overrides_after_tasks_are_overrides_not_task_names():
    # `--tasks` takes several values, so argparse alone would read `eval.train_size=8000` as a third task
    # (and the run would stop on "unknown task" after its start-up).
    from openjepa.cli import build_parser, parse_args

    parser = build_parser()
    args = parse_args(parser, ["eval", "runs/x", "eval.seeds=[0,1]", "--tasks", "count", "largest_shape",
                               "eval.train_size=8000", "--no-ceiling", "eval.probe_epochs=5"])
    assert args.tasks == ["count", "largest_shape"]
    assert args.overrides == ["eval.seeds=[0,1]", "eval.train_size=8000", "eval.probe_epochs=5"]
    assert args.no_ceiling
    # The last override of a key wins, so their typed order is kept, repeated ones included.
    args = parse_args(parser, ["eval", "runs/x", "a.b=1", "--tasks", "count", "a.b=2", "--quiet", "a.b=1"])
    assert args.overrides == ["a.b=1", "a.b=2", "a.b=1"] and args.tasks == ["count"]
