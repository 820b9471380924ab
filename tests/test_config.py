"""Config: YAML + overrides, type checks, unknown keys, required values, bases."""

import pytest

from openjepa.config import Config, ConfigError, dump_yaml, from_dict, load_config, parse_override, to_dict


def test_defaults_and_overrides():
    overrides = ["optim.lr=5e-4", "mask.target_scale=[0.1,0.2]", "train.compile=true", "model.pred_heads=4"]
    cfg = load_config(None, overrides)
    assert cfg.optim.lr == 5e-4
    assert cfg.mask.target_scale == (0.1, 0.2)
    assert cfg.train.compile is True
    assert cfg.model.pred_heads == 4
    assert isinstance(Config().optim.lr, float)


def test_yaml_with_base(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 1e-3\n  warmup_epochs: 2\nmodel:\n  arch: vit_small\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  lr: 2.0e-3\n")
    cfg = load_config(tmp_path / "child.yaml", ["optim.warmup_epochs=3"])
    assert cfg.optim.lr == 2e-3 and cfg.optim.warmup_epochs == 3 and cfg.model.arch == "vit_small"


def test_unknown_key_names_key_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*Did you mean 'optim.lr'"):
        load_config(None, ["optim.lrr=1"])
    (tmp_path / "bad.yaml").write_text("optim:\n  warmup: 3\n")
    with pytest.raises(ConfigError, match=r"optim.warmup.*bad.yaml"):
        load_config(tmp_path / "bad.yaml")


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"config key 'data.batch_size'.*expected int.*'many'"):
        load_config(None, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match=r"'train.compile'.*expected bool"):
        load_config(None, ["train.compile=3"])
    with pytest.raises(ConfigError, match=r"'mask.mode'.*not one of"):
        load_config(None, ["mask.mode=biased"])
    with pytest.raises(ConfigError, match=r"mask.target_scale.*expected 2 values"):
        load_config(None, ["mask.target_scale=[0.1]"])


def test_required_value_and_cross_checks(tmp_path):
    (tmp_path / "req.yaml").write_text("data:\n  source: folder\n  path: ???\n")
    with pytest.raises(ConfigError, match=r"required config value.*data.path"):
        load_config(tmp_path / "req.yaml")
    assert load_config(tmp_path / "req.yaml", ["data.path=/x"]).data.path == "/x"
    with pytest.raises(ConfigError, match="not a multiple of model.patch_size"):
        load_config(None, ["data.image_size=100", "model.patch_size=16"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_roundtrip():
    cfg = load_config(None, ["teacher.momentum=[0.99,1.0]"])
    assert from_dict(to_dict(cfg)) == cfg
    assert "momentum:" in dump_yaml(cfg)


def test_parse_override_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    assert parse_override("a.b=1e-3") == ("a.b", 1e-3)


def test_video_settings_are_checked():
    with pytest.raises(ConfigError, match=r"data.num_frames=7 is not divisible by model.tubelet_size=2"):
        load_config(None, ["data.num_frames=7", "model.tubelet_size=2"])
    with pytest.raises(ConfigError, match="empty"):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "e.yaml").write_text("\n")
            load_config(Path(d) / "e.yaml")


def test_benchmark_without_cuda_is_one_line(capsys):
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from train_step import main

    config = Path(__file__).resolve().parents[1] / "configs" / "ijepa" / "demo.yaml"
    assert main([str(config), "--device", "cuda", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device=cuda" in err
