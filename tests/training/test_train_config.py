"""The typed training recipe: bundled recipes load into frozen sections, values are converted to their types, a
run's config.yaml reads back to the same config, and a bad key or value is one line naming it and its source."""
import dataclasses

import pytest
import yaml

from m2hmx.cli.train import main as train_main
from m2hmx.train_config import (CONFIG_DIR, DEFAULTS, OptimSection, TrainConfig, TrainError, TrainSection,
                                load_config)

RECIPES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", RECIPES)
def test_bundled_recipes_round_trip_through_config_yaml(name, tmp_path):
    cfg = load_config(name)
    assert cfg.config_file == str(CONFIG_DIR / f"{name}.yaml")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    written = tmp_path / "config.yaml"  # what a run writes beside its checkpoint
    written.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    again = load_config(str(written))
    assert again == cfg and again.config_file == cfg.config_file  # the saved model still names the recipe


def test_values_take_their_types_and_the_sections_are_frozen():
    cfg = load_config("demo", ["optim.lr=1e-3", "train.minutes=2", "data.size=[64,96]", "train.trainable=[decoder]",
                               "train.threads=null", "optim.betas=[0.8,1]"])
    assert cfg.optim.lr == 0.001 and type(cfg.optim.lr) is float  # YAML reads 1e-3 as a string
    assert cfg.train.minutes == 2.0 and type(cfg.train.minutes) is float
    assert cfg.data.size == (64, 96) and cfg.train.trainable == ("decoder",) and cfg.train.threads is None
    assert cfg.optim.betas == (0.8, 1.0) and all(type(b) is float for b in cfg.optim.betas)
    assert cfg.data.seeds == (0, 400)  # from demo.yaml
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3
    assert DEFAULTS == TrainConfig() and DEFAULTS.to_dict()["optim"]["betas"] == [0.9, 0.999]
    assert OptimSection(lr=1).lr == 1.0


@pytest.mark.parametrize("recipe, words", [
    ("optim: {lrr: 0.1}\n", ("unknown config key 'optim.lrr'", "known:", "lr,")),
    ("trian: {steps: 3}\n", ("unknown config key 'trian'",)),
    ("train: {steps: 0}\n", ("config key 'train.steps'", "> 0", "got 0")),
    ("train: {batch_size: four}\n", ("config key 'train.batch_size'", "an integer", "'four'")),
    ("data: {size: [8, 8]}\n", ("config key 'data.size'", ">= 16")),
    ("data: {kind: scannet}\n", ("data.kind 'scannet'",)),
    ("optim: {schedule: step}\n", ("optim.schedule 'step'",)),
    ("optim: {betas: [0.9]}\n", ("optim.betas", "two numbers")),
    ("train: {trainable: decoder}\n", ("train.trainable", "a list of strings")),
    ("model: {preset: m2hmx-xl}\n", ("unknown model preset 'm2hmx-xl'",)),
    ("model: {overrides: {backbone: {widht: 3}}}\n", ("model.overrides.backbone.widht", "BackboneConfig")),
    ("loss: {depth_l1: 1.0}\n", ("loss:", "depth_l1")),
])
def test_a_bad_key_or_value_in_a_recipe_is_one_line_naming_it_and_the_file(recipe, words, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(recipe)
    with pytest.raises(TrainError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and all(w in message for w in words), message


def test_a_bad_override_is_named_as_given_and_the_cli_exits_2(tmp_path, capsys):
    with pytest.raises(TrainError, match=r"^--set train\.log_every=-1: config key 'train\.log_every' must be > 0"):
        load_config("demo", ["train.log_every=-1"])
    with pytest.raises(TrainError, match=r"^--set data\.frame=3: unknown config key 'data\.frame'"):
        load_config("demo", ["data.frame=3"])
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  out_dir: " + str(tmp_path / "run") + "\n  stepz: 3\n")
    assert train_main(["--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and "'train.stepz'" in err, err
    assert not (tmp_path / "run").exists()


def test_sections_built_in_code_are_checked_too():
    with pytest.raises(TrainError, match="config key 'train.batch_size' must be > 0"):
        TrainSection(batch_size=0)
    with pytest.raises(TrainError, match="config key 'optim.lr' must be a finite number"):
        OptimSection(lr=float("nan"))
    with pytest.raises(TrainError, match="unknown config key 'optim.lrr'"):
        TrainConfig.from_dict({"optim": {"lrr": 1}})
