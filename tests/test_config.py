import pytest

from fmnist_tf.config import KEYS, TrainConfig, available_configs, load_config, make_config
from fmnist_tf.errors import ConfigError


def test_shipped_configs_validate():
    names = available_configs()
    assert {"baseline", "deep"} <= set(names)
    for name in names:
        assert isinstance(load_config(name), TrainConfig)


def test_misspelt_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: deep\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "unknown key 'learnig_rate'" in message and "did you mean 'learning_rate'" in message
    assert "valid keys:" in message and "\n" not in message


@pytest.mark.parametrize("key, value, fragment", [
    ("epochs", 0, "'epochs' must be an integer >= 1"),
    ("epochs", 2.5, "'epochs' must be an integer"),
    ("optimizer", "rmsprop", "one of adam, adamw, sgd"),
    ("augment", "maybe", "true or false"),
    ("dropout", 1.5, "<= 0.95"),
    ("learning_rate", True, "a number"),
])
def test_bad_values_are_one_line_errors(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment) as error:
        make_config({key: value})
    assert "valid keys:" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("key, value", [("plateau_factor", 1.0), ("learning_rate", float("inf")),
                                        ("width", float("nan")), ("model", "nope")])
def test_values_that_would_fail_late_are_refused_early(key, value):
    with pytest.raises(ConfigError, match=key if key != "model" else "unknown model 'nope'"):
        make_config({key: value})


def test_command_line_strings_are_coerced():
    config = load_config("baseline", {"epochs": "3", "batch_size": "64", "learning_rate": "1e-3",
                                      "augment": "false", "optimizer": "sgd"})
    assert (config.epochs, config.batch_size, config.learning_rate) == (3, 64, 0.001)
    assert config.augment is False and config.optimizer == "sgd"


def test_non_mapping_yaml_and_unknown_config(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="no config named 'nope'"):
        load_config("nope")


def test_every_key_is_a_command_line_flag_with_help(capsys):
    from fmnist_tf.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    train_help = capsys.readouterr().out
    for key in KEYS:
        assert f"--{key.replace('_', '-')}" in train_help
