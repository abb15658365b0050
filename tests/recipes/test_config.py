"""Recipe schema: validation errors name the key and the fix; overrides; the catalog."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.cli import main
from recipes.config import (
    DEFAULT_TEST_FRACTION,
    Recipe,
    RecipeError,
    apply_overrides,
    catalog_names,
    load_recipe,
    parse_recipe,
    recipe_to_toml,
    resolve_recipe_path,
)
from zoo import FullFineTune, Stage, UnfreezeTop
from zoo.errors import InvalidValueError
from zoo.policies import OPTIMIZERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (pyproject: tomli; python_version < '3.11')
    import tomli as tomllib

GOOD = """
[data]
source = "photos"
image_size = [32, 32]

[model]
backbone = "inception_v3"
weights = "none"

[[stages]]
name = "head"
policy = "freeze_backbone"
epochs = 1
learning_rate = 1e-3

[[stages]]
name = "top"
policy = "unfreeze_top"
blocks = 2
epochs = 2
learning_rate = 1e-4
"""


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _data(**changes):
    data = tomllib.loads(GOOD)
    return apply_overrides(data, [f"{k}={v}" for k, v in changes.items()])


def test_good_recipe_parses_with_defaults(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD, "mine.toml"))
    assert recipe.name == "mine"
    assert recipe.model.weights_arg is None
    assert recipe.stages[1].blocks == 2
    assert recipe.stages[1].batchnorm == "frozen"
    assert recipe.input_shape() == (32, 32, 3)
    assert recipe.export.enabled and recipe.verify.tolerance is None


def test_typo_in_key_names_path_and_suggests(tmp_path):
    text = GOOD.replace("learning_rate = 1e-4", "learnig_rate = 1e-4")
    with pytest.raises(
        RecipeError, match=r"stages\[1\]\.learnig_rate: unknown key; did you mean 'learning_rate'\?"
    ):
        load_recipe(_write(tmp_path, text))


def test_unknown_section_key():
    with pytest.raises(RecipeError, match=r"^recipe: dataa: unknown key; did you mean 'data'"):
        parse_recipe({**_data(), "dataa": {}})


def test_missing_backbone_key():
    data = _data()
    del data["model"]["backbone"]
    with pytest.raises(RecipeError, match=r"model\.backbone: required key is missing"):
        parse_recipe(data)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(
        RecipeError,
        match=r"model\.backbone: Unknown backbone 'incepton_v3'\. Did you mean inception_v3",
    ):
        parse_recipe(_data(**{"model.backbone": "incepton_v3"}))


def test_negative_learning_rate():
    with pytest.raises(
        RecipeError, match=r"stages\[1\]\.learning_rate: got -0\.1; it should be greater than 0"
    ):
        parse_recipe(_data(**{"stages.1.learning_rate": "-0.1"}))


def test_policy_that_does_not_fit_the_backbone():
    with pytest.raises(
        RecipeError,
        match=r"stages\[1\]\.blocks: 12 blocks asked, but inception_v3 has 11 .*use at most 11",
    ):
        parse_recipe(_data(**{"stages.1.blocks": "12"}))


def test_wrong_type_is_not_converted():
    with pytest.raises(
        RecipeError, match=r"stages\[0\]\.epochs: expected an integer .*got '2' \(str\)"
    ):
        parse_recipe(_data(**{"stages.0.epochs": '"2"'}))
    with pytest.raises(RecipeError, match=r"run\.deterministic: expected true or false, got 1"):
        parse_recipe(_data(**{"run.deterministic": "1"}))


def test_cross_field_problems():
    with pytest.raises(
        RecipeError,
        match=r"stages\[1\]: policy 'unfreeze_top' needs exactly one of blocks or fraction",
    ):
        parse_recipe(_data(**{"stages.1.fraction": "0.5"}))
    with pytest.raises(
        RecipeError, match=r"stages\[0\]\.blocks: only used by policy 'unfreeze_top'"
    ):
        parse_recipe(_data(**{"stages.0.blocks": "1"}))
    with pytest.raises(RecipeError, match=r"stages\[1\]\.name: 'head' is used twice"):
        parse_recipe(_data(**{"stages.1.name": "head"}))
    with pytest.raises(RecipeError, match=r"model\.head\.units: an 'mlp' head needs hidden widths"):
        parse_recipe(_data(**{"model.head.type": "mlp"}))


def test_all_problems_on_one_line():
    with pytest.raises(RecipeError) as info:
        parse_recipe(_data(**{"stages.0.epochs": "0", "stages.1.learning_rate": "-1"}))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("recipe: stages[0].epochs: got 0; it should be greater than 0")
    assert "(and 1 more: stages[1].learning_rate" in message
    assert len(info.value.problems) == 2


def test_overrides_dotted_paths_and_literals():
    data = apply_overrides(
        tomllib.loads(GOOD),
        [
            "stages.1.epochs=3",
            "stages.0.learning_rate=2e-3",
            "model.backbone=resnet50",  # not TOML: taken as a bare string
            'data.source="a b"',
            "data.image_size=[48, 40]",
            "run.deterministic=true",
            "model.head.dropout=0.5",  # creates the sub-table
        ],
    )
    assert data["stages"][1]["epochs"] == 3
    assert data["stages"][0]["learning_rate"] == 2e-3
    assert data["model"]["backbone"] == "resnet50"
    assert data["data"]["source"] == "a b"
    assert data["data"]["image_size"] == [48, 40]
    assert data["run"]["deterministic"] is True
    assert data["model"]["head"] == {"dropout": 0.5}
    assert tomllib.loads(GOOD)["stages"][1]["epochs"] == 2  # the input is not modified


def test_override_errors():
    with pytest.raises(RecipeError, match=r"'stages\.2' needs a list index from 0 to 1"):
        apply_overrides(tomllib.loads(GOOD), ["stages.2.epochs=1"])
    with pytest.raises(RecipeError, match=r"expected key\.path=value"):
        apply_overrides(tomllib.loads(GOOD), ["stages.1.epochs"])
    with pytest.raises(RecipeError, match=r"'data\.source' is a value, not a table"):
        apply_overrides(tomllib.loads(GOOD), ["data.source.x=1"])


def test_override_is_validated(tmp_path):
    path = _write(tmp_path, GOOD)
    assert load_recipe(path, ["stages.1.epochs=5"]).stages[1].epochs == 5
    with pytest.raises(RecipeError, match=r"stages\[1\]\.epochs: got -5"):
        load_recipe(path, ["stages.1.epochs=-5"])


def test_recipe_as_toml_round_trips(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD), ['description="line one\nline \\"two\\""'])
    again = Recipe.model_validate(tomllib.loads(recipe_to_toml(recipe)))
    assert again == recipe


def test_invalid_toml(tmp_path):
    with pytest.raises(RecipeError, match=r"not valid TOML"):
        load_recipe(_write(tmp_path, "[data\nsource = 1"))


@pytest.mark.parametrize("name", ["fashion-mnist-lite0", "flowers-inception-v3", "folder"])
def test_catalog_recipes_validate(name):
    assert name in catalog_names()
    recipe = load_recipe(name)
    assert recipe.name == name
    assert [s.policy for s in recipe.stages] == ["freeze_backbone", "unfreeze_top"]
    # The main job also trains the fine-tuned blocks' BatchNorm layers (chosen by validation).
    assert recipe.stages[1].batchnorm == (
        "trainable" if name == "fashion-mnist-lite0" else "frozen"
    )


def test_unknown_recipe_name_suggests():
    with pytest.raises(FileNotFoundError, match=r"Did you mean fashion-mnist-lite0"):
        resolve_recipe_path("fashion-mnist-lite")


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("learning_rate = 1e-3", "learning_rate = -1e-3"))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("zoo: error: recipe ")
    assert "stages[0].learning_rate: got -0.001; it should be greater than 0" in err[0]
    assert not (tmp_path / "run").exists()  # failed before anything ran


def test_cli_bad_override_exits_2(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["run", str(path), "--set", "model.backbone=nope_net"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.backbone: Unknown backbone 'nope_net'" in err[0]


def test_cli_subprocess_typo_exits_2(tmp_path):
    path = _write(tmp_path, GOOD.replace("epochs = 2", "epoch = 2"))
    done = subprocess.run(
        [sys.executable, "-m", "recipes.cli", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert (
        lines == [lines[-1]] and "stages[1].epoch: unknown key; did you mean 'epochs'?" in lines[0]
    )
    assert not (tmp_path / "runs").exists()


REPO = Path(__file__).resolve().parents[2]


def test_stage_config_is_mapped_to_stage_field_by_field():
    data = _data(
        **{
            "stages.1.policy": '"full"',
            "stages.1.blocks": "0",
            "stages.1.batchnorm": '"trainable"',
            "stages.1.lr_decay": "0.5",
            "stages.1.optimizer": '"sgd"',
            "stages.1.weight_decay": "1e-4",
            "stages.1.schedule": '"cosine"',
            "stages.1.warmup_epochs": "0.5",
            "stages.1.label_smoothing": "0.1",
            "stages.1.early_stopping_patience": "3",
            "stages.1.augment": "false",
            "stages.1.cache": '"off"',
            "stages.1.cache_dtype": '"bfloat16"',
            "stages.1.monitor": '"val_accuracy"',
            "stages.1.restore_best": "false",
            "stages.1.ema": "0.99",
        }
    )
    del data["stages"][1]["blocks"]
    config = parse_recipe(data).stages[1]
    stage = config.to_stage(augment="flip layer")
    assert isinstance(stage, Stage)
    assert stage.policy == FullFineTune(batchnorm="trainable", lr_decay=0.5)
    for name in type(config).model_fields:
        if hasattr(stage, name) and name not in ("policy", "augment"):
            assert getattr(stage, name) == getattr(config, name), name
    assert stage.augment is None  # this stage turns augmentation off
    head = parse_recipe(_data()).stages[1]
    assert head.to_stage(augment="flip layer").augment == "flip layer"
    assert head.make_policy() == UnfreezeTop(blocks=2)


def test_stage_validation_agrees_with_zoo_stage_on_float_warmup():
    # A fractional warm-up equal to the epochs: zoo.Stage accepts it, so the recipe does.
    recipe = parse_recipe(_data(**{"stages.1.warmup_epochs": "2.0"}))
    assert recipe.stages[1].to_stage().warmup_epochs == 2.0
    assert parse_recipe(_data(**{"stages.1.warmup_epochs": "1.5"})).stages[1].warmup_epochs == 1.5
    # One more than the epochs: both refuse, the recipe with zoo.Stage's own words.
    with pytest.raises(InvalidValueError, match=r"warmup_epochs must be in \[0, epochs\]"):
        Stage("top", UnfreezeTop(blocks=2), epochs=2, learning_rate=1e-4, warmup_epochs=2.5)
    with pytest.raises(
        RecipeError, match=r"stages\[1\]: Invalid Stage 'top': warmup_epochs must be in"
    ):
        parse_recipe(_data(**{"stages.1.warmup_epochs": "2.5"}))


def test_lr_decay_is_accepted_for_full_and_kept_in_the_policy_config():
    data = _data(**{"stages.1.policy": '"full"', "stages.1.lr_decay": "0.7"})
    del data["stages"][1]["blocks"]
    stage = parse_recipe(data).stages[1]
    assert stage.policy_config() == {"policy": "full", "batchnorm": "frozen", "lr_decay": 0.7}
    assert stage.make_policy() == FullFineTune(lr_decay=0.7)
    top = parse_recipe(_data(**{"stages.1.lr_decay": "0.8"})).stages[1].policy_config()
    assert top == {
        "policy": "unfreeze_top",
        "blocks": 2,
        "fraction": None,
        "batchnorm": "frozen",
        "lr_decay": 0.8,
    }
    with pytest.raises(
        RecipeError, match=r"stages\[0\]\.lr_decay: only used by policy 'unfreeze_top' and 'full'"
    ):
        parse_recipe(_data(**{"stages.0.lr_decay": "0.5"}))


def test_optimizer_names_come_from_zoo_policies():
    for name in OPTIMIZERS:
        assert parse_recipe(_data(**{"stages.0.optimizer": f'"{name}"'})).stages[0].optimizer
    with pytest.raises(
        RecipeError, match=r"stages\[0\]\.optimizer: got 'lamb'; it should be one of 'adam'"
    ):
        parse_recipe(_data(**{"stages.0.optimizer": '"lamb"'}))


def test_run_settings_accept_auto():
    run = parse_recipe(_data(**{"run.mixed_precision": '"auto"', "run.jit_compile": '"auto"'})).run
    assert run.fine_tune_kwargs() == {
        "mixed_precision": "auto",
        "jit_compile": "auto",
        "inference_engine": "auto",
    }
    off = parse_recipe(_data()).run
    assert off.fine_tune_kwargs() == {
        "mixed_precision": None,
        "jit_compile": False,
        "inference_engine": "auto",
    }
    for bad in ('"fast"', "1"):
        with pytest.raises(
            RecipeError, match=r"run\.jit_compile: got .*; it should be true, false or"
        ):
            parse_recipe(_data(**{"run.jit_compile": bad}))
    with pytest.raises(RecipeError, match=r"run\.mixed_precision: got 'fp8'"):
        parse_recipe(_data(**{"run.mixed_precision": '"fp8"'}))


def test_run_inference_engine_is_one_of_the_engines():
    for name in ("auto", "tensorflow", "litert"):
        run = parse_recipe(_data(**{"run.inference_engine": f'"{name}"'})).run
        assert run.fine_tune_kwargs()["inference_engine"] == name
    with pytest.raises(RecipeError, match=r"run\.inference_engine: got 'onnx'"):
        parse_recipe(_data(**{"run.inference_engine": '"onnx"'}))


def test_evaluate_on_defaults_to_test_and_validation_needs_a_split():
    assert parse_recipe(_data()).data.evaluate_on == "test"
    assert 0 < DEFAULT_TEST_FRACTION < 0.5
    data = _data(**{"data.evaluate_on": '"validation"'})
    assert parse_recipe(data).data.evaluate_on == "validation"
    with pytest.raises(RecipeError, match=r'data\.evaluate_on: "validation" needs a validation'):
        parse_recipe({**data, "data": {**data["data"], "validation_fraction": 0.0}})
    with pytest.raises(RecipeError, match=r"data\.evaluate_on: got 'train'"):
        parse_recipe(_data(**{"data.evaluate_on": '"train"'}))


def test_catalog_recipes_pick_settings_by_probe_and_test_on_held_out_data():
    for name in catalog_names():
        recipe = load_recipe(name)
        assert recipe.run.mixed_precision == "auto" and recipe.run.jit_compile == "auto", name
        assert recipe.data.evaluate_on == "test", name
    # tf_flowers has no test split of its own: the recipe holds one out.
    assert load_recipe("flowers-inception-v3").data.test_fraction == 0.1


def test_tomllib_is_imported_the_way_python_3_10_is_supported():
    """pyproject installs tomli below 3.11; every import of tomllib must fall back to it."""
    guard = "if sys.version_info >= (3, 11):\n    import tomllib\nelse:"
    offenders = []
    for path in sorted(REPO.glob("**/*.py")):
        if ".venv" in path.parts or "site-packages" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if "import tomllib" in text and (
            guard not in text or "import tomli as tomllib" not in text
        ):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
