"""Classification training augmentation run on a whole batch, on the training device (`data.augment_on=device`).

With `data.augment_on=workers` every DataLoader worker decodes an image and augments it on its own with
PIL/torchvision (random resized crop, flips, colour jitter, normalise). On a GPU machine that per-image CPU
work, not the GPU, set the pace. With `device`, the workers only decode and bring each image to a fixed
uint8 square (`square_transform`); the batch crosses to the device as uint8 (a quarter of the float bytes)
and `BatchAugment` does the rest there, batched: on the GPU when training there, the same code on the CPU.

What differs from the workers path, and why it is close enough:

- The random crop is taken from an S0 x S0 square, S0 = round(image_size / 0.875) (the validation resize),
  made by resizing the shorter side to S0 and centre-cropping, not from the full decoded image. Crops keep
  the 3/4..4/3 aspect range and the `random_resized_crop_scale` area range of that square, but a long
  picture's ends never appear, and a crop is resized twice (image -> S0, crop -> image_size).
- torchvision's ColorJitter applies brightness, contrast, saturation and hue in a fresh random order at
  every call; here they always run in ONE fixed order: brightness, contrast, saturation, hue. The factors are
  drawn from the same ranges.
- The pixels are floats from the first interpolation on (torchvision rounds a PIL image to uint8 after each step).

Every random number is drawn on the CPU from a `torch.Generator` (`sample`), never on the device, so one seed
gives the same augmented batch on any device, with any number of DataLoader workers.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from .images import ImageError, exif_orientation, load_image, skipped_entry

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses (contrast and saturation blend towards it).
LUMA = (0.2989, 0.587, 0.114)
CENTRE_CROP_FRACTION = 0.875  # image_size / S0: the share of the square that validation's centre crop keeps
CROP_ATTEMPTS = 10  # draws of a crop box before falling back to the centre crop, as torchvision does


def square_size(image_size: int) -> int:
    """S0, the side of the uint8 square the workers hand over: the validation resize of an image_size input."""
    return int(round(image_size / CENTRE_CROP_FRACTION))


def square_transform(image_size: int) -> T.Compose:
    """PIL image -> uint8 [3, S0, S0]: shorter side resized to S0 (antialiased), centre square kept."""
    s0 = square_size(image_size)
    return T.Compose([T.Resize(s0, antialias=True), T.CenterCrop(s0), T.PILToTensor()])


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Float RGB [N,3,H,W] -> luma [N,1,H,W]."""
    r, g, b = images.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * images + (1 - factor) * other, clamped to [0, 1] (torchvision's colour adjustments on floats)."""
    return (factor * images + (1.0 - factor) * other).clamp_(0.0, 1.0)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """Float RGB [N,3,H,W] in [0,1] -> HSV with hue in [0,1) (grey pixels get hue 0)."""
    r, g, b = images.unbind(1)
    value, _ = images.max(1)
    low, _ = images.min(1)
    chroma = value - low
    grey = chroma == 0
    saturation = chroma / torch.where(value == 0, torch.ones_like(value), value)
    safe = torch.where(grey, torch.ones_like(chroma), chroma)
    # Hue in sixths of the circle, by which channel is the largest (red wins ties, then green).
    hue = torch.where(value == r, (g - b) / safe,
                      torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack((hue, saturation, value), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV [N,3,H,W] (hue in [0,1)) -> float RGB in [0,1], by the closed form c_n = v - v s clamp(min(k, 4-k), 0, 1)
    with k = (n + 6 h) mod 6 for n = 5 (red), 3 (green), 1 (blue)."""
    hue, saturation, value = hsv.unbind(1)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * hue, 6.0)
        ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
        channels.append(value - value * saturation * ramp)
    return torch.stack(channels, 1).clamp_(0.0, 1.0)


class BatchAugment(nn.Module):
    """Random resized crop, flips, colour jitter and normalisation of a uint8 batch, per image, on its device.

    `sample(n, generator)` draws every per-image parameter on the CPU; `apply(images, params)` uses them;
    `forward(images, generator)` does both. Colour jitter runs in one fixed order -- brightness, contrast,
    saturation, hue -- where torchvision's ColorJitter permutes the four at every call.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *,
                 scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 horizontal_flip: float = 0.5, vertical_flip: float = 0.0, color_jitter: float = 0.2,
                 hue: float = 0.02, input_size: int | None = None):
        super().__init__()
        if not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"scale and ratio must be increasing positive ranges, not {scale} and {ratio}")
        self.size = size
        self.input_size = input_size or square_size(size)
        self.scale, self.ratio = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))
        self.horizontal_flip, self.vertical_flip = float(horizontal_flip), float(vertical_flip)
        self.color_jitter, self.hue = float(color_jitter), float(hue)
        # Not persistent: a checkpoint holds the network only, whichever augmentation trained it.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"size={self.size}, input_size={self.input_size}, scale={self.scale}, hflip={self.horizontal_flip}, "
                f"vflip={self.vertical_flip}, color_jitter={self.color_jitter}, hue={self.hue}")

    # -- parameters (CPU) ---------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, height: int | None = None, width: int | None = None
               ) -> dict[str, torch.Tensor]:
        """Every random choice for n images of height x width (default: the input square), as CPU tensors.

        The crop box follows torchvision's RandomResizedCrop.get_params: up to 10 draws of an area fraction
        (uniform in `scale`) and an aspect ratio (log-uniform in `ratio`) until the box fits, then a uniform
        position; a box that never fits becomes the largest centred crop inside the ratio range. Every draw
        is made whether or not its operation is enabled, so the stream of numbers does not depend on them.
        """
        height = height or self.input_size
        width = width or self.input_size
        g = dict(generator=generator, dtype=torch.float64)
        area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, CROP_ATTEMPTS, **g))
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * torch.rand(n, CROP_ATTEMPTS, **g))
        w = torch.round(torch.sqrt(area * aspect)).long()
        h = torch.round(torch.sqrt(area / aspect)).long()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.long().argmax(1)  # the first attempt that fits (0 when none does; `found` tells)
        found = fits.any(1)
        w = w.gather(1, first[:, None]).squeeze(1)
        h = h.gather(1, first[:, None]).squeeze(1)
        # The fallback: the whole image, cut to the nearest allowed aspect ratio when it lies outside the range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = int(round(height * self.ratio[1])), height
        else:
            fw, fh = width, height
        w = torch.where(found, w, torch.full_like(w, fw))
        h = torch.where(found, h, torch.full_like(h, fh))
        position = torch.rand(n, 2, **g)
        top = torch.where(found, (position[:, 0] * (height - h + 1)).floor().long(), torch.full_like(h, (height - fh) // 2))
        left = torch.where(found, (position[:, 1] * (width - w + 1)).floor().long(), torch.full_like(w, (width - fw) // 2))
        flips = torch.rand(n, 2, **g)
        jitter = torch.rand(n, 4, generator=generator)
        low = max(0.0, 1.0 - self.color_jitter)
        factors = low + (1.0 + self.color_jitter - low) * jitter[:, :3]
        return {"top": top, "left": left, "height": h, "width": w,
                "hflip": flips[:, 0] < self.horizontal_flip, "vflip": flips[:, 1] < self.vertical_flip,
                "brightness": factors[:, 0].contiguous(), "contrast": factors[:, 1].contiguous(),
                "saturation": factors[:, 2].contiguous(), "hue": (2.0 * jitter[:, 3] - 1.0) * self.hue,
                "input_hw": torch.tensor([height, width])}

    # -- the augmentation (any device) --------------------------------------------------------------
    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 [N,3,H,W] (any device) -> normalised float32 [N,3,size,size], with `sample`'s parameters."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchAugment takes RGB batches [N, 3, H, W], not {tuple(images.shape)}")
        n, _, height, width = images.shape
        if len(params["top"]) != n or params["input_hw"].tolist() != [height, width]:
            raise ValueError(f"the parameters were drawn for {len(params['top'])} images of "
                             f"{params['input_hw'].tolist()} pixels, the batch has {n} of {[height, width]}")
        scale = 1.0 / 255.0 if not images.is_floating_point() else 1.0
        out = torch.empty((n, 3, self.size, self.size), dtype=torch.float32, device=images.device)
        boxes = zip(params["top"].tolist(), params["left"].tolist(), params["height"].tolist(), params["width"].tolist())
        # One interpolation per image: the boxes differ in size. Bilinear with antialias is what torchvision's
        # resized_crop runs on tensors.
        for k, (t, l, h, w) in enumerate(boxes):
            crop = images[k:k + 1, :, t:t + h, l:l + w].to(torch.float32) * scale
            out[k:k + 1] = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                         antialias=True)

        def per_image(key: str) -> torch.Tensor:
            return params[key].to(out.device, non_blocking=True).view(n, 1, 1, 1)

        if self.horizontal_flip > 0:
            out = torch.where(per_image("hflip"), out.flip(-1), out)
        if self.vertical_flip > 0:
            out = torch.where(per_image("vflip"), out.flip(-2), out)
        if self.color_jitter > 0:
            out = _blend(out, torch.zeros((), device=out.device), per_image("brightness"))
            out = _blend(out, grayscale(out).mean(dim=(1, 2, 3), keepdim=True), per_image("contrast"))
            out = _blend(out, grayscale(out), per_image("saturation"))
        if self.hue > 0:
            hsv = rgb_to_hsv(out)
            hue = torch.remainder(hsv[:, :1] + per_image("hue"), 1.0)
            out = hsv_to_rgb(torch.cat((hue, hsv[:, 1:]), 1))
        return (out - self.mean) / self.std

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        return self.apply(images, self.sample(n, generator, height, width))


# -- JPEG bytes: the decode moves to the device too ---------------------------------------------------
#
# With augment_on=device on a CUDA GPU, data.cache=none and only JPEG training files, the workers do not
# even decode: they read each file's bytes and its EXIF orientation (a header parse), and the batch is
# decoded with nvJPEG on the GPU (`decode_squares`, called before the batch is moved) and brought to the same
# uint8 S0 squares the workers would have made. The decode device is a parameter: on the CPU the same code
# decodes with libjpeg, which is how the tests run it.

JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG colour modes whose decode to RGB agrees with load_image's; the others (CMYK, YCCK) are decoded by PIL
# in the worker and travel as ready squares.
PLAIN_JPEG_MODES = ("RGB", "L")


def is_jpeg(path: str | Path) -> bool:
    """Whether the file starts like a JPEG (its first three bytes), whatever its name says."""
    try:
        with open(path, "rb") as f:
            return f.read(3) == JPEG_MAGIC
    except OSError:
        return False


class EncodedImages(NamedTuple):
    """A training batch's images before their decode, one entry per image: `payloads` holds the JPEG file's
    bytes (1-D uint8) or, for a file the device decoder should not take, the uint8 square the worker decoded
    (3-D); `orientations` the EXIF orientation to apply after the device decode (nvJPEG ignores it)."""

    payloads: list[torch.Tensor]
    orientations: list[int]
    paths: list[str]


class EncodedImageDataset(Dataset):
    """(path, label) items -> ((payload, orientation, path), label), or (None, skipped_entry) when unreadable."""

    def __init__(self, items: list[tuple[Path, int]], image_size: int, max_pixels: int | None):
        self.items = items
        self.max_pixels = max_pixels
        self.transform = square_transform(image_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            return None, skipped_entry(path, f"{path}: cannot read the file ({e.strerror})")
        try:
            with Image.open(io.BytesIO(raw)) as im:  # the header only: orientation and colour mode
                orientation = exif_orientation(im, Path(path))
                plain = im.format == "JPEG" and im.mode in PLAIN_JPEG_MODES
        except (OSError, SyntaxError, ValueError):
            plain = False  # let load_image name what is wrong
        if plain:
            return (torch.frombuffer(bytearray(raw), dtype=torch.uint8), orientation, str(path)), label
        try:
            return (self.transform(load_image(path, max_pixels=self.max_pixels)), 1, str(path)), label
        except ImageError as e:
            return None, skipped_entry(path, e)


def collate_encoded(batch: list) -> tuple[EncodedImages, torch.Tensor, list[str]]:
    """EncodedImageDataset samples -> (EncodedImages, labels, skipped entries)."""
    good = [(x, y) for x, y in batch if x is not None]
    bad = [y for x, y in batch if x is None]
    payloads, orientations, paths = (list(field) for field in zip(*[x for x, _ in good])) if good else ([], [], [])
    return EncodedImages(payloads, orientations, paths), torch.tensor([y for _, y in good], dtype=torch.long), bad


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Stored pixels [C,H,W] -> upright, for EXIF orientation 1..8 (the transposes load_image applies)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:  # mirrored along the main diagonal
        return image.transpose(-2, -1)
    if orientation == 6:  # stored turned 90 degrees anticlockwise: turn it clockwise
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:  # mirrored along the other diagonal
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def resize_square(image: torch.Tensor, s0: int) -> torch.Tensor:
    """uint8 [3,H,W] -> uint8 [3,s0,s0]: shorter side to s0 (bilinear, antialiased), the centre square kept;
    the sizes and offsets torchvision's Resize(s0) and CenterCrop(s0) choose."""
    _, h, w = image.shape
    if h <= w:
        nh, nw = s0, int(s0 * w / h)
    else:
        nh, nw = int(s0 * h / w), s0
    resized = F.interpolate(image[None].to(torch.float32), size=(nh, nw), mode="bilinear", align_corners=False,
                            antialias=True)[0]
    top, left = int(round((nh - s0) / 2.0)), int(round((nw - s0) / 2.0))
    return resized[:, top:top + s0, left:left + s0].round_().clamp_(0, 255).to(torch.uint8)


def _decode_jpegs(payloads: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor | None]:
    """RGB uint8 [3,H,W] per JPEG on `device` (stored orientation), None for each that does not decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision 0.29 marks its decoders deprecated (in favour of torchcodec); they are what nvJPEG is reached by.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(payloads, mode=ImageReadMode.RGB, device=device))
        except (RuntimeError, ValueError):
            pass  # one bad file fails the whole batched call: find it one file at a time
        decoded: list[torch.Tensor | None] = []
        for data in payloads:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except (RuntimeError, ValueError):
                decoded.append(None)
        return decoded


def decode_squares(batch: EncodedImages, image_size: int, device: torch.device | str, max_pixels: int | None = None
                   ) -> tuple[torch.Tensor, list[int], list[str]]:
    """An EncodedImages batch -> (uint8 [M,3,S0,S0] on `device`, indices of the M images kept, skipped entries).

    JPEG bytes are decoded on `device` (nvJPEG on a GPU), oriented and brought to the S0 square; a file the
    device decoder refuses is decoded by PIL (load_image) instead, and one that does not decode at all is
    left out and named."""
    s0 = square_size(image_size)
    squares: list[torch.Tensor | None] = [None] * len(batch.payloads)
    bad: list[str] = []
    encoded = [k for k, p in enumerate(batch.payloads) if p.ndim == 1]
    decoded = _decode_jpegs([batch.payloads[k] for k in encoded], device) if encoded else []
    for k, image in zip(encoded, decoded):
        if image is None:
            try:
                square = square_transform(image_size)(load_image(batch.paths[k], max_pixels=max_pixels))
            except ImageError as e:
                bad.append(skipped_entry(batch.paths[k], e))
                continue
            squares[k] = square.to(device)
        else:
            squares[k] = resize_square(orient(image, batch.orientations[k]), s0)
    for k, payload in enumerate(batch.payloads):
        if payload.ndim == 3:
            squares[k] = payload.to(device, non_blocking=True)
    kept = [k for k, square in enumerate(squares) if square is not None]
    if not kept:
        return torch.empty((0, 3, s0, s0), dtype=torch.uint8, device=device), kept, bad
    return torch.stack([squares[k] for k in kept]), kept, bad
