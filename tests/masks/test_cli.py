"""``openjepa inspect masks``: arguments, JSON output, the picture, configs whose data path is missing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from openjepa.config import ConfigError
from openjepa.masks.cli import add_inspect_masks

REQUIRED = (
    "context_size_mean",
    "target_size_mean",
    "context_row_freq",
    "context_col_freq",
    "target_row_freq",
    "target_col_freq",
    "context_size_before_trim_mean",
)


def _parser() -> argparse.ArgumentParser:
    """The same nesting as ``openjepa inspect masks``."""
    parser = argparse.ArgumentParser(prog="openjepa")
    sub = parser.add_subparsers(dest="command")
    inspect = sub.add_parser("inspect")
    add_inspect_masks(inspect.add_subparsers(dest="inspect_command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


@pytest.fixture
def vith_config(tmp_path: Path) -> Path:
    """Like configs/ijepa/vith14-in1k.yaml: ViT-H/14 at 224 px, 128 per process, data.path required."""
    path = tmp_path / "vith14.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"arch": "vit_huge", "patch_size": 14},
        "data": {"source": "folder", "path": "???", "image_size": 224, "batch_size": 128},
    }))
    return path


def test_json_output_is_one_object_with_the_statistics(vith_config, tmp_path, capsys) -> None:
    png = tmp_path / "out" / "f.png"
    code = _run(["inspect", "masks", str(vith_config), "--mode", "faithful", "--batches", "4", "--json",
                 "--png", str(png)])
    assert code == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)  # nothing else on stdout
    for key in REQUIRED:
        assert key in stats, key
    assert stats["mode"] == "faithful" and stats["grid"] == [16, 16] and stats["batch_size"] == 128
    assert stats["context_row_freq"][-1] == 0.0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert str(png) in captured.err


def test_options_and_overrides_may_follow_the_config(vith_config, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _run(["inspect", "masks", "--batches", "2", str(vith_config), "mask.num_targets=2", "--batch-size",
                 "16", "--seed", "3", "--json", "mask.min_keep=4"])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_targets"] == 2 and stats["min_keep"] == 4 and stats["seed"] == 3
    assert stats["batch_size"] == 16 and stats["batches"] == 2 and stats["mode"] == "fixed"
    assert (tmp_path / "masks.png").is_file()  # default picture path: the current folder


def test_readable_report(vith_config, tmp_path, capsys) -> None:
    code = _run(["inspect", "masks", str(vith_config), "--batches", "2", "--batch-size", "8",
                 "--png", str(tmp_path / "m.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert "context patches per sample" in out and "context row freq" in out and "m.png" in out


def test_unsatisfiable_config_is_a_config_error(vith_config, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"mask\.min_keep"):
        _run(["inspect", "masks", str(vith_config), "--mode", "faithful", "model.patch_size=28",
              "--png", str(tmp_path / "x.png")])


def test_help_after_the_config(vith_config, capsys) -> None:
    assert _run(["inspect", "masks", str(vith_config), "--help"]) == 0
    assert "--batch-size" in capsys.readouterr().out


def test_through_the_openjepa_entry_point(vith_config, tmp_path, capsys) -> None:
    from openjepa import cli

    try:
        cli.build_parser()
    except ImportError:
        pytest.skip("openjepa.cli cannot import every subcommand yet")
    png = str(tmp_path / "e.png")
    assert cli.main(["inspect", "masks", str(vith_config), "--batches", "2", "--json", "--png", png]) == 0
    assert "context_size_mean" in json.loads(capsys.readouterr().out)
    # An unsatisfiable config: exit code 2 and the error on stderr (main catches ConfigError).
    argv = ["inspect", "masks", str(vith_config), "--mode", "faithful", "model.patch_size=28", "--png", png]
    assert cli.main(argv) == 2
    assert "mask.min_keep" in capsys.readouterr().err


def test_module_entry_point(vith_config, tmp_path, capsys) -> None:
    from openjepa.masks.cli import main

    assert main([str(vith_config), "--batches", "2", "--batch-size", "8", "--json", "--png",
                 str(tmp_path / "m.png")]) == 0
    assert json.loads(capsys.readouterr().out)["batch_size"] == 8
    argv = [str(vith_config), "--mode", "faithful", "model.patch_size=28", "--png", str(tmp_path / "x.png")]
    assert main(argv) == 2
    assert "mask.min_keep" in capsys.readouterr().err
