from pathlib import Path

import pytest

from activestream.config import Config, load_config
from activestream.errors import ConfigError


def test_defaults_run_without_a_file():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.data.dataset == "digits"
    assert cfg.training.buffer_size == 16
    assert (cfg.sampling.sampler, cfg.sampling.explore_p) == ("margin", 0.9)
    assert cfg.sampling.cold_start


def test_yaml_overrides_only_the_keys_it_names(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  buffer_size: 4\nsampling:\n  sampler: margin\n")
    cfg = load_config(path)
    assert cfg.training.buffer_size == 4
    assert cfg.sampling.sampler == "margin"
    assert cfg.training.lr == Config().training.lr


def test_unknown_key_is_an_error_naming_the_dotted_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  bufer_size: 4\n")
    with pytest.raises(ConfigError, match=r"'training\.bufer_size' is not a known setting"):
        load_config(path)


def test_wrong_value_is_an_error_naming_the_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("sampling:\n  explore_p: 1.5\n")
    with pytest.raises(ConfigError, match=r"'sampling\.explore_p'"):
        load_config(path)


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"sampling\.sampler: unknown sampler 'nope'.*entropy"):
        Config().with_overrides({"sampling.sampler": "nope"})


def test_errors_are_one_line(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  factory: vgg\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_invalid_yaml_and_missing_file_are_config_errors(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_skip_none_so_absent_flags_keep_file_values():
    cfg = Config().with_overrides({"training.buffer_size": None, "seed": 7})
    assert cfg.training.buffer_size == 16
    assert cfg.seed == 7


def test_bald_with_dropout_off_is_an_error_naming_both_settings():
    with pytest.raises(ConfigError, match=r"^config: sampler 'bald' .* model\.dropout must be > 0"):
        Config().with_overrides({"sampling.sampler": "bald", "model.dropout": 0.0})


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"'model\.factory'.*digits_cnn.*resnet18"):
        Config().with_overrides({"model.factory": "vgg"})


def test_the_task_is_classification_unless_the_file_says_detection(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("task: detection\nsampling:\n  sampler: box_presence_sum\n")
    assert Config().task == "classification"
    cfg = load_config(path)
    assert (cfg.task, cfg.sampling.sampler) == ("detection", "box_presence_sum")


def test_an_unknown_task_is_an_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"'task'.*'classification' or 'detection'"):
        Config().with_overrides({"task": "segmentation"})


def test_a_box_sampler_under_the_default_task_names_the_task_key():
    with pytest.raises(ConfigError, match=r"unknown sampler 'box_entropy_max'.*task: detection"):
        Config().with_overrides({"sampling.sampler": "box_entropy_max"})


def test_mc_dropouts_check_is_the_classifiers_alone():
    """Under detection a class sampler's name means the detection default: no dropout draws."""
    with pytest.raises(ConfigError, match=r"model\.dropout must be > 0"):
        Config().with_overrides({"sampling.sampler": "bald", "model.dropout": 0.0})
    cfg = Config(task="detection").with_overrides(
        {"sampling.sampler": "bald", "model.dropout": 0.0}
    )
    assert cfg.model.dropout == 0.0
