"""data.augment_on=device: BatchAugment equals torchvision's ops per image, draws reproducibly from a seed, and
trains end to end; JPEG bytes decoded in the module come out as the squares the workers would make."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from transferkit.cli import main
from transferkit.engine.meta import ModelMeta, image_input
from transferkit.spec import load_spec
from transferkit.tasks import get_task
from transferkit.tasks.classification.module import ClassificationModule
from transferkit.vision.batch_augment import (BatchAugment, EncodedImages, decode_squares, orient, square_size,
                                              square_transform)
from transferkit.vision.datasets import ImageDataset
from transferkit.vision.images import load_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 pictures (noise upsampled), so resizing has something to average."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return (fine * 255 + torch.rand(n, 3, side, side, generator=g) * 20).clamp(0, 255).to(torch.uint8)


def reference(image: torch.Tensor, p: dict, k: int, augment: BatchAugment) -> torch.Tensor:
    """Image k through torchvision.transforms.v2.functional with the same parameters, in BatchAugment's order."""
    x = TF.to_dtype(image, torch.float32, scale=True)
    x = TF.resized_crop(x, int(p["top"][k]), int(p["left"][k]), int(p["height"][k]), int(p["width"][k]),
                        [augment.size, augment.size], antialias=True)
    if p["hflip"][k]:
        x = TF.horizontal_flip(x)
    if p["vflip"][k]:
        x = TF.vertical_flip(x)
    x = TF.adjust_brightness(x, float(p["brightness"][k]))
    x = TF.adjust_contrast(x, float(p["contrast"][k]))
    x = TF.adjust_saturation(x, float(p["saturation"][k]))
    x = TF.adjust_hue(x, float(p["hue"][k]))
    return TF.normalize(x, list(MEAN), list(STD))


def test_apply_equals_torchvision_functional_ops_per_image():
    augment = BatchAugment(32, MEAN, STD, scale=(0.2, 1.0), horizontal_flip=0.5, vertical_flip=0.5,
                           color_jitter=0.4, hue=0.1)
    batch = images(8, augment.input_size)
    params = augment.sample(8, torch.Generator().manual_seed(3))
    # every combination of the two flips appears
    params["hflip"] = torch.tensor([True, False] * 4)
    params["vflip"] = torch.tensor([True, True, False, False] * 2)
    out = augment.apply(batch, params)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    for k in range(8):
        want = reference(batch[k], params, k, augment)
        torch.testing.assert_close(out[k], want, atol=2e-4, rtol=0)


def test_apply_takes_a_channels_last_batch_and_gives_the_same_images():
    augment = BatchAugment(32, MEAN, STD, vertical_flip=0.5, color_jitter=0.3, hue=0.05)
    batch = images(4, augment.input_size, seed=1)
    params = augment.sample(4, torch.Generator().manual_seed(0))
    plain = augment.apply(batch, params)
    nhwc = augment.apply(batch.contiguous(memory_format=torch.channels_last), params)
    torch.testing.assert_close(nhwc, plain, atol=1e-5, rtol=0)


def test_same_seed_same_batch_and_different_seeds_differ():
    augment = BatchAugment(32, MEAN, STD)
    batch = images(6, augment.input_size)
    first = augment(batch, torch.Generator().manual_seed(7))
    again = augment(batch, torch.Generator().manual_seed(7))
    other = augment(batch, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # the draws never touch torch's global generator (nor the device's)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    augment(batch, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)


def test_parameter_statistics():
    scale, n, side = (0.3, 0.9), 20000, 224
    augment = BatchAugment(192, MEAN, STD, scale=scale, horizontal_flip=0.3, vertical_flip=0.0, color_jitter=0.25,
                           hue=0.05, input_size=side)
    p = augment.sample(n, torch.Generator().manual_seed(0))
    assert abs(p["hflip"].float().mean().item() - 0.3) < 0.02
    assert not p["vflip"].any()
    h, w, top, left = p["height"], p["width"], p["top"], p["left"]
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= side).all() and (left + w <= side).all()
    area = (h * w).double() / side ** 2
    # rounding each side to whole pixels moves the area by at most ~0.5 px per side
    assert area.min() >= scale[0] - 0.01 and area.max() <= scale[1] + 0.01
    # the first box that fits is kept, which favours smaller areas; torchvision's draws show the same bias
    torch.manual_seed(0)
    boxes = [RandomResizedCrop.get_params(torch.zeros(1, side, side), list(scale), [3 / 4, 4 / 3]) for _ in range(3000)]
    torchvision_area = np.mean([b[2] * b[3] for b in boxes]) / side ** 2
    assert area.mean().item() == pytest.approx(torchvision_area, abs=0.015)
    aspect = w.double() / h.double()
    assert aspect.min() >= 3 / 4 - 0.02 and aspect.max() <= 4 / 3 + 0.02
    # positions are spread over the whole free range
    slack = (side - h).clamp(min=1).double()
    assert (top.double() / slack).mean().item() == pytest.approx(0.5, abs=0.02)
    for key in ("brightness", "contrast", "saturation"):
        assert p[key].min() >= 0.75 and p[key].max() <= 1.25
        assert p[key].mean().item() == pytest.approx(1.0, abs=0.01)
    assert p["hue"].abs().max() <= 0.05 and abs(p["hue"].mean().item()) < 0.002


def test_a_crop_that_never_fits_falls_back_to_the_centre_crop_as_torchvision_does():
    # a 10 x 40 picture: no box of 90-100 % of its area has an aspect ratio inside 3/4..4/3
    augment = BatchAugment(8, MEAN, STD, scale=(0.9, 1.0))
    p = augment.sample(50, torch.Generator().manual_seed(0), height=10, width=40)
    want = RandomResizedCrop.get_params(torch.zeros(3, 10, 40), scale=[0.9, 1.0], ratio=[3 / 4, 4 / 3])
    for k in range(50):
        assert (int(p["top"][k]), int(p["left"][k]), int(p["height"][k]), int(p["width"][k])) == want == (0, 13, 10, 13)


def test_apply_refuses_parameters_drawn_for_another_batch():
    augment = BatchAugment(32, MEAN, STD)
    params = augment.sample(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="drawn for 4 images"):
        augment.apply(images(3, augment.input_size), params)


def test_module_draws_from_the_seed_and_step_not_from_global_state():
    meta = ModelMeta(task="classification", classes=("a", "b"), backbone="timm:test_resnet",
                     inputs=(image_input(32, 32, MEAN, STD),), arch={})
    spec = load_spec(get_task("classification").spec_class, None, ["train.seed=5"])

    def module():
        return ClassificationModule(nn.Identity(), meta, spec.train, BatchAugment(32, MEAN, STD))

    a, b = module(), module()
    torch.manual_seed(123)
    first = [a.augment_generator().initial_seed() for _ in range(3)]  # one optimizer step, three accumulated batches
    torch.manual_seed(456)
    assert [b.augment_generator().initial_seed() for _ in range(3)] == first
    assert len(set(first)) == 3


# -- the data side and JPEG bytes ---------------------------------------------------------------------

def save_jpeg(path: Path, pixels: np.ndarray, orientation: int = 1, mode: str = "RGB") -> None:
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=92, exif=exif)


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    return images(1, max(h, w), seed)[0, :, :h, :w].permute(1, 2, 0).numpy().copy()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29 deprecates its decoders
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_decoded_jpegs_upright_like_load_image(tmp_path, orientation):
    from torchvision.io import ImageReadMode, decode_jpeg

    path = tmp_path / "x.jpg"
    save_jpeg(path, smooth(20, 34, orientation), orientation)
    stored = decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB)
    got = orient(stored, orientation).permute(1, 2, 0).numpy().astype(int)
    want = np.asarray(load_image(path)).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 1.5  # two JPEG decoders; a wrong turn would differ by tens


@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    """2 classes x 3 training JPEGs of different shapes: one stored sideways (EXIF 6), one grey, one CMYK."""
    for split, count in (("train", 3), ("val", 1)):
        for c, cls in enumerate(("a", "b")):
            for i in range(count):
                kind = {0: ("RGB", 6), 1: ("L", 1), 2: ("CMYK", 1)}[i]
                save_jpeg(tmp_path / split / cls / f"{i}.jpg", smooth(30 + 7 * i, 44 - 5 * i, 10 * c + i),
                          orientation=kind[1], mode=kind[0])
    return tmp_path


def device_data(folder: Path, *overrides: str):
    task = get_task("classification")
    spec = load_spec(task.spec_class, None, [f"data.train_dir={folder / 'train'}", f"data.val_dir={folder / 'val'}",
                                            "data.image_size=32", "train.batch_size=6", "train.num_workers=0",
                                            "model.pretrained=false", "data.augment_on=device", *overrides])
    return spec, task.build_data(spec)


def test_device_mode_training_items_are_uint8_squares_and_validation_is_unchanged(jpeg_folder):
    spec, data = device_data(jpeg_folder)
    data.scan("train")
    s0 = square_size(32)
    x, _ = data.make_dataset(data.train_items, True)[0]
    assert x.dtype == torch.uint8 and x.shape == (3, s0, s0) == (3, 37, 37)
    images_, labels, bad = next(iter(data.train_dataloader()))
    assert images_.dtype == torch.uint8 and images_.shape == (6, 3, s0, s0) and not bad
    v, _ = data.make_dataset(data.val_items, False)[0]
    assert v.dtype == torch.float32 and v.shape == (3, 32, 32)


def test_jpeg_bytes_decoded_in_the_module_equal_the_workers_squares(jpeg_folder):
    spec, data = device_data(jpeg_folder)
    data.decode_on_device = True  # what a CUDA run sets; the decode below runs on the CPU
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch[0], EncodedImages)
    assert sum(p.ndim == 1 for p in batch[0].payloads) == 4  # the two CMYK files come decoded by the workers
    meta = ModelMeta(task="classification", classes=tuple(data.classes), backbone="timm:test_resnet",
                     inputs=(image_input(32, 32, MEAN, STD),), arch={})
    module = ClassificationModule(nn.Identity(), meta, spec.train, BatchAugment(32, MEAN, STD))
    squares, labels, bad = module.on_before_batch_transfer(batch, 0)
    assert squares.dtype == torch.uint8 and squares.shape == (6, 3, 37, 37) and not bad
    assert torch.equal(labels, batch[1])
    workers = ImageDataset([(Path(p), 0) for p in batch[0].paths], square_transform(32), None)
    for k in range(6):
        want = workers[k][0].int()
        assert (squares[k].int() - want).abs().float().mean() < 1.5, batch[0].paths[k]


def test_a_jpeg_that_does_not_decode_is_left_out_of_its_batch_and_named(tmp_path):
    good, broken = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    save_jpeg(good, smooth(24, 24, 0))
    broken.write_bytes(good.read_bytes()[:40])  # the header survives, the pixels do not
    payloads = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in (broken, good)]
    squares, kept, bad = decode_squares(EncodedImages(payloads, [1, 1], [str(broken), str(good)]), 32, "cpu")
    assert squares.shape == (1, 3, 37, 37) and kept == [1]
    assert len(bad) == 1 and bad[0].startswith(f"{broken}\t")


# -- through the CLI ------------------------------------------------------------------------------------

FAST = ["model.backbone=timm:test_resnet", "model.pretrained=false", "data.image_size=32", "train.batch_size=8",
        "train.num_workers=0", "train.epochs=2", "train.learning_rate=0.01", "evaluation.batch_size=16",
        "train.histograms=false"]


def test_cli_trains_with_augmentation_on_the_device(digits_demo, tmp_path, monkeypatch):
    digits = digits_demo(per_class=2, val_per_class=1, size=32)
    calls = []
    original = BatchAugment.apply

    def counted(self, images_, params):
        calls.append((images_.dtype, tuple(images_.shape[1:])))
        return original(self, images_, params)

    monkeypatch.setattr(BatchAugment, "apply", counted)
    run = tmp_path / "run"
    assert main(["classification", "train", "-r", str(run), f"data.train_dir={digits / 'train'}",
                 f"data.val_dir={digits / 'val'}", *FAST, "data.augment_on=device"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and 0.0 <= metrics["best"]["val/acc"] <= 1.0
    steps = json.loads((run / "status.json").read_text().splitlines()[-1])["step"]
    assert len(calls) == steps > 0  # every training batch, and no validation batch
    assert set(calls) == {(torch.uint8, (3, 37, 37))}


def test_cli_refuses_an_unknown_augment_on_in_one_line(tmp_path, capsys):
    code = main(["classification", "train", "-r", str(tmp_path / "run"), "data.augment_on=gpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "data.augment_on" in err and "gpu" in err and "'workers' or 'device'" in err


# -- on a CUDA device (skipped without one; run them when a GPU is lent) ------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_apply_on_cuda_equals_apply_on_the_cpu_for_the_same_draws():
    augment = BatchAugment(32, MEAN, STD, scale=(0.2, 1.0), horizontal_flip=0.5, vertical_flip=0.5,
                           color_jitter=0.4, hue=0.1)
    batch = images(16, augment.input_size, seed=4)
    params = augment.sample(16, torch.Generator().manual_seed(5))  # drawn on the CPU, as the module draws them
    on_cpu = augment.apply(batch, params)
    on_gpu = augment.to("cuda").apply(batch.cuda(), params)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=2e-3, rtol=0)


@cuda
def test_jpeg_bytes_decoded_on_cuda_equal_the_workers_squares(jpeg_folder):
    spec, data = device_data(jpeg_folder)
    data.decode_on_device = True
    batch = next(iter(data.train_dataloader()))
    squares, kept, failed = decode_squares(batch[0], 32, "cuda")
    assert squares.device.type == "cuda" and squares.shape == (6, 3, 37, 37) and not failed
    workers = ImageDataset([(Path(p), 0) for p in batch[0].paths], square_transform(32), None)
    for k in range(6):  # nvJPEG and libjpeg round differently: close, not equal
        assert (squares[k].cpu().int() - workers[k][0].int()).abs().float().mean() < 2.0, batch[0].paths[k]
