"""Training config: profiles, YAML validation, precedence of overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from matxfer.errors import ConfigError
from matxfer.training.config import (
    ModelSettings,
    TrainConfig,
    load_config,
    resolve_config,
    save_config,
)
from matxfer.training.rundir import config_for_run


def test_paper_profile_is_the_study_configuration() -> None:
    config = resolve_config("paper")
    assert (config.model.alignn_layers, config.model.gcn_layers) == (4, 4)
    assert (config.model.hidden_features, config.model.embedding_features) == (256, 64)
    assert config.model.norm == "batch"
    assert (config.loss, config.lr, config.weight_decay) == ("mse", 1e-3, 1e-5)
    assert (config.scheduler, config.batch_size, config.epochs) == ("onecycle", 16, 500)
    assert (config.early_stopping_patience, config.val_fraction) == (50, 0.1)


def test_fast_profile_is_small_l1_and_fixed_length() -> None:
    config = resolve_config("fast")
    assert (config.model.alignn_layers, config.model.gcn_layers) == (2, 2)
    assert config.model.hidden_features == 64
    assert config.loss == "l1"
    assert 60 <= config.epochs <= 100
    assert config.early_stopping_patience is None  # one-cycle runs to its anneal


def test_unknown_key_in_yaml_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nmodel:\n  hiden_features: 8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'model\.hiden_features'"):
        load_config(path)


def test_invalid_value_names_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("loss: hinge\nbatch_size: 0\nseed: -3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "loss='hinge'" in str(error.value) and "batch_size=0" in str(error.value)
    assert "seed=-3" in str(error.value)  # numpy would raise deep inside the split


@pytest.mark.parametrize("text", ["[1, 2]", "epochs: [unclosed"])
def test_non_mapping_or_broken_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml") as error:
        load_config(path)
    assert "\n" not in str(error.value)  # one line, as the CLI prints errors


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"'turbo'.*\['fast', 'paper'\]"):
        resolve_config("turbo")


def test_precedence_profile_then_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("profile: fast\nepochs: 7\nlr: 0.01\nmodel: {hidden_features: 32}\n")
    config = load_config(path, overrides={"lr": 0.002})
    assert config.profile == "fast" and config.loss == "l1"  # from the profile
    assert config.epochs == 7 and config.model.hidden_features == 32  # from the file
    assert config.model.alignn_layers == 2  # profile's model keys survive a partial section
    assert config.lr == 0.002  # flag wins


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = resolve_config("fast", {"seed": 3, "model": {"cutoff": 6.0}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert isinstance(config, TrainConfig)


def test_resume_reuses_saved_config_and_applies_flags(tmp_path: Path) -> None:
    save_config(resolve_config("fast", {"epochs": 9}), tmp_path / "config.yaml")
    resumed = config_for_run(run_dir=tmp_path, resume=True, overrides={"seed": None})
    assert resumed.epochs == 9 and resumed.profile == "fast"
    fresh = config_for_run(run_dir=tmp_path, resume=False)
    assert fresh.profile == "paper"


def test_rbf_cutoff_is_a_model_setting_written_only_when_changed() -> None:
    from matxfer.training.run import build_model

    default = resolve_config("fast")
    # Absent at its default: configs and study job ids from before the field stay equal.
    assert "cutoff" not in default.model_dump(mode="json")["model"]
    assert build_model(default, 1).cutoff == ModelSettings().cutoff == 8.0
    changed = resolve_config("fast", {"model": {"cutoff": 6.0}})
    assert changed.model_dump(mode="json")["model"]["cutoff"] == 6.0
    model = build_model(changed, 1)
    assert model.cutoff == 6.0 and model.config_dict()["cutoff"] == 6.0


def test_configs_with_the_old_graph_fields_still_load(tmp_path: Path) -> None:
    # cutoff and cutoff_step never changed a graph; configs written with them still load.
    path = tmp_path / "config.yaml"
    save_config(resolve_config("fast", {"epochs": 9}), path)
    text = path.read_text().replace("graph:\n", "graph:\n  cutoff: 8.0\n  cutoff_step: 1.0\n")
    path.write_text(text)
    assert "cutoff_step" in path.read_text()
    assert load_config(path) == resolve_config("fast", {"epochs": 9})
