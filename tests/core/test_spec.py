import pytest
import yaml

from transferkit.errors import SpecError
from transferkit.spec import apply_overrides, load_spec, render_default_spec, validate
from transferkit.tasks import task_names
from transferkit.tasks.classification.spec import ClassificationSpec


def test_override_coerces_types_and_sets_nested_keys():
    spec = load_spec(ClassificationSpec, None, ["train.epochs=3", "train.learning_rate=1e-3",
                                                 "model.backbone=resnet18", "model.freeze_blocks=[0,1]",
                                                 "model.pretrained=false", "train.resume=true"])
    assert spec.train.epochs == 3 and isinstance(spec.train.epochs, int)
    assert spec.train.learning_rate == pytest.approx(1e-3)
    assert spec.model.backbone == "resnet18"
    assert spec.model.freeze_blocks == [0, 1]
    assert spec.model.pretrained is False
    assert spec.train.resume is True


def test_precision_given_as_a_number_means_the_same_as_its_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train:\n  precision: 32\n")  # YAML reads 32 as a number
    assert load_spec(ClassificationSpec, path).train.precision == "32"
    assert load_spec(ClassificationSpec, None, ["train.precision=32"]).train.precision == "32"
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, None, ["train.precision=8"])
    assert "train.precision" in str(e.value) and "bf16-mixed" in str(e.value)


def test_override_wins_over_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train:\n  epochs: 7\n  batch_size: 4\n")
    spec = load_spec(ClassificationSpec, path, ["train.epochs=2"])
    assert (spec.train.epochs, spec.train.batch_size) == (2, 4)


def test_unknown_key_names_path_and_suggests_nearest(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, None, ["train.epoch=3"])
    assert "unknown key 'train.epoch'" in str(e.value) and "did you mean 'train.epochs'" in str(e.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, path)
    assert str(path) in str(e.value) and "model.backbone" in str(e.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, None, ["train.epochs=many"])
    assert "train.epochs" in str(e.value) and "'many'" in str(e.value)


@pytest.mark.parametrize("override", ["train.epochs=0", "train.epochs=-1", "train.batch_size=0"])
def test_zero_or_negative_counts_are_refused(override):
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, None, [override])
    assert override.split("=")[0] in str(e.value)


def test_yaml_syntax_error_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1, 2\n  batch_size: 3\n")
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, path)
    assert f"{path}:" in str(e.value) and "YAML syntax error" in str(e.value)


def test_tab_indentation_is_explained(tmp_path):
    path = tmp_path / "tabs.yaml"
    path.write_text("train:\n\tepochs: 3\n")
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, path)
    assert "tabs" in str(e.value) and ":2:" in str(e.value)


def test_missing_spec_file_says_how_to_make_one(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, tmp_path / "nope.yaml")
    assert "default_spec" in str(e.value)


def test_default_spec_round_trips_and_has_a_comment_per_key():
    text = render_default_spec(ClassificationSpec, "header")
    data = yaml.safe_load(text)
    assert validate(ClassificationSpec, data) == ClassificationSpec()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # " in line, f"no comment on: {line}"


def test_override_into_a_value_is_refused():
    with pytest.raises(SpecError):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_override_without_equals_is_refused():
    with pytest.raises(SpecError) as e:
        load_spec(ClassificationSpec, None, ["train.epochs"])
    assert "key.path=value" in str(e.value)


def test_spec_is_frozen():
    spec = ClassificationSpec()
    with pytest.raises(Exception):
        spec.train.epochs = 5


@pytest.mark.parametrize("task", task_names())
def test_every_task_default_spec_round_trips(task):
    from transferkit.api import default_spec, spec_schema
    from transferkit.tasks import get_task

    schema = spec_schema(get_task(task))  # the task's spec plus the automl section every task shares
    assert validate(schema, yaml.safe_load(default_spec(task))) == schema()
