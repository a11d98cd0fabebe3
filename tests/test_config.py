"""Config loading: defaults, files, overrides, type errors, unknown keys, the resolved file."""

import os

import pytest
import yaml

from transfer_tf.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    load_config,
    save_config,
    to_dict,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_file():
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.name == "resnet50"
    assert cfg.data.label_offset == 1


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO, "configs"))))
def test_shipped_configs_load(name):
    cfg = load_config(os.path.join(REPO, "configs", name))
    assert cfg.name


def test_file_values_and_overrides(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n  global_batch_size: 8\ndata:\n  image_size: 64\n")
    cfg = load_config(
        path, ["train.epochs=5", "data.crop_area_range=[0.2, 0.9]", "model.dropout=0.5"]
    )
    assert cfg.train.epochs == 5.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.global_batch_size == 8
    assert cfg.data.image_size == 64
    assert cfg.data.crop_area_range == (0.2, 0.9)
    assert cfg.model.dropout == 0.5


def test_later_override_wins(tmp_path):
    cfg = load_config(None, ["train.epochs=1", "train.epochs=7"])
    assert cfg.train.epochs == 7


def test_unknown_key_in_file_names_key_and_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "'train.epoch'" in msg and "'epochs'" in msg


def test_unknown_section_is_error():
    with pytest.raises(ConfigError, match="'trian'.*'train'"):
        config_from_dict({"trian": {"epochs": 1}})


def test_unknown_override_key_names_key():
    with pytest.raises(ConfigError, match="'model.nme'.*'name'"):
        load_config(None, ["model.nme=resnet18"])


def test_type_errors_name_key_and_type():
    with pytest.raises(ConfigError, match="'train.global_batch_size'.*integer"):
        load_config(None, ["train.global_batch_size=abc"])
    with pytest.raises(ConfigError, match="'train.xla'.*true or false"):
        load_config(None, ["train.xla=3"])
    with pytest.raises(ConfigError, match="'data.crop_area_range'.*2 values"):
        load_config(None, ["data.crop_area_range=[0.1]"])
    with pytest.raises(ConfigError, match="'train.global_batch_size'.*integer"):
        load_config(None, ["train.global_batch_size=2.5"])


def test_choice_and_range_validation():
    with pytest.raises(ConfigError, match="'train.mixed_precision'.*'bfloat16'"):
        load_config(None, ["train.mixed_precision=bf16"])
    with pytest.raises(ConfigError, match="'data.image_size'.*positive"):
        load_config(None, ["data.image_size=0"])
    with pytest.raises(ConfigError, match="crop_area_range"):
        load_config(None, ["data.crop_area_range=[0.5, 0.1]"])
    with pytest.raises(ConfigError, match="'data.num_parallel_calls'.*-1 .*got -2"):
        load_config(None, ["data.num_parallel_calls=-2"])
    assert load_config(None, ["data.num_parallel_calls=-1"]).data.num_parallel_calls == -1


def test_phases_are_typed_and_validated(tmp_path):
    path = write(
        tmp_path,
        "transfer:\n  phases:\n    - {name: probe, trainable: head, steps: 10, base_learning_rate: 0.1}\n"
        "    - {name: ft, trainable: all, epochs: 1, base_learning_rate: 0.01, lr_multipliers: {stage1: 0.1}}\n",
    )
    cfg = load_config(path, ["transfer.phases.1.base_learning_rate=0.02"])
    assert [p.name for p in cfg.transfer.phases] == ["probe", "ft"]
    assert cfg.transfer.phases[1].base_learning_rate == 0.02
    assert cfg.transfer.phases[1].lr_multipliers == {"stage1": 0.1}
    with pytest.raises(ConfigError, match=r"phases\[0\]\.trainabel"):
        config_from_dict({"transfer": {"phases": [{"trainabel": "head", "steps": 1}]}})
    with pytest.raises(ConfigError, match=r"phases\[0\].*exactly one of epochs or steps"):
        config_from_dict({"transfer": {"phases": [{"trainable": "head"}]}})
    with pytest.raises(ConfigError, match="index 5 is out of range"):
        load_config(path, ["transfer.phases.5.steps=1"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = write(tmp_path, "train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.epochs"])


def test_base_file_is_merged(tmp_path):
    write(tmp_path, "train:\n  epochs: 3\n  global_batch_size: 16\n", name="base.yaml")
    top = write(tmp_path, "base: base.yaml\ntrain:\n  epochs: 4\n")
    cfg = load_config(top)
    assert cfg.train.epochs == 4 and cfg.train.global_batch_size == 16


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "data.image_size=32", "model.name=resnet18"])
    path = str(tmp_path / "config.yaml")
    save_config(cfg, path)
    with open(path) as f:
        assert yaml.safe_load(f)["train"]["epochs"] == 2
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_auto_precision_and_xla_are_the_shipped_defaults(tmp_path):
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        cfg = load_config(os.path.join(REPO, "configs", name))
        assert (cfg.train.mixed_precision, cfg.train.xla) == ("auto", "auto"), name
    cfg = load_config(None, ["train.xla=auto", "train.mixed_precision=auto"])
    assert cfg.train.xla == "auto"
    assert load_config(None, ["train.xla=true"]).train.xla is True
    with pytest.raises(ConfigError, match="'train.xla'.*true or false .*'auto'.*'fast'"):
        load_config(None, ["train.xla=fast"])
    # The resolved file round-trips both forms.
    save_config(cfg, str(tmp_path / "c.yaml"))
    assert load_config(str(tmp_path / "c.yaml")).train.xla == "auto"
