"""Fine-tune recipes: keys that the stages set anyway are refused; the experiment is named, not guessed."""

from pathlib import Path

import pytest

from pipeline.finetune import STAGE_SET_KEYS, load_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key, value, instead", [
    ("train.total_steps", "500", "stages[].steps"),
    ("train.optim.lr", "3e-4", "stages[].lr"),
    ("train.optim.warmup_steps", "10", "stages[].warmup_steps"),
    ("train.freeze", "[backbone]", "stages[].freeze"),
    ("train.run_dir", "x", "--run-dir"),
    ("train.init_from", "x", "--pretrained"),
    ("train.data.sources", "[{path: x}]", "--data"),
    ("train.experiment", "mine", "experiment"),
])
def test_a_recipe_key_the_stages_set_anyway_is_refused_with_where_to_set_it(key, value, instead):
    with pytest.raises(ValueError) as err:
        load_recipe(ROOT / "configs/finetune/default.yaml", [f"{key}={value}"])
    assert f"'{key}'" in str(err.value) and instead in str(err.value)


def test_a_refused_key_inside_a_mapping_set_whole_is_found(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("defaults: " + str(ROOT / "configs/finetune/default.yaml") + "\n"
                      "train:\n  optim: {lr: 1.0e-3, weight_decay: 0.01}\n")
    with pytest.raises(ValueError, match="'train.optim.lr'.*stages\\[\\].lr"):
        load_recipe(recipe)
    assert "train.optim.weight_decay" not in STAGE_SET_KEYS


def test_every_shipped_recipe_loads():
    for path in sorted((ROOT / "configs/finetune").glob("*.yaml")):
        cfg = load_recipe(path)
        assert cfg.stages, path


def test_the_experiment_is_the_recipes_or_named_after_the_robot():
    from pipeline.finetune import FinetuneConfig

    assert FinetuneConfig().experiment is None
    assert load_recipe(ROOT / "configs/finetune/default.yaml", ["experiment=uva-pretrain"]).experiment == "uva-pretrain"


def test_the_robots_cameras_and_the_datas_must_agree_or_be_mapped():
    from pipeline.finetune import match_cameras
    from pipeline.robots import load_robot

    franka = load_robot("franka")  # cameras: exterior, wrist
    assert match_cameras(franka, {"exterior", "wrist"}, {}) == ["exterior", "wrist"]
    with pytest.raises(ValueError, match=r"the robot's \['exterior'\] are not in the data; the data's \['front'\] are "
                                         r"not the robot's.*cameras: \{exterior: front\}"):
        match_cameras(franka, {"front", "wrist"}, {})
    assert match_cameras(franka, {"front", "wrist"}, {"exterior": "front"}) == ["front", "wrist"]
    with pytest.raises(ValueError, match=r"the data's \['top'\] are not the robot's"):
        match_cameras(franka, {"exterior", "wrist", "top"}, {})
    with pytest.raises(ValueError, match=r"\['side'\] are not cameras of robot 'franka'"):
        match_cameras(franka, {"exterior", "wrist"}, {"side": "top"})
    assert match_cameras(franka, set(), {}) == ["exterior", "wrist"]  # an index that records no cameras
    with pytest.raises(ValueError, match=r"cameras: \{exterior: main, wrist: null\}"):
        match_cameras(franka, {"main"}, {})
    assert match_cameras(franka, {"main"}, {"exterior": "main", "wrist": None}) == ["main"]
