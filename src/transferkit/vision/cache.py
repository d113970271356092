"""Decoded-image cache (`data.cache=ram|disk`): decode every image once, then augment from the pixels.

Without it a training run decodes every JPEG of every epoch in its loaders. With it, the images are
decoded while `VisionData` checks a split (a decode that happens anyway), kept as upright RGB uint8
arrays, and every later epoch, loader and DataLoader worker reads those pixels:

- `ram`: one shared-memory buffer per split. DataLoader workers see the same pages (inherited on fork,
  passed by handle on spawn), so two workers do not hold two copies.
- `disk`: one `.npy` file per image under `data.cache_dir` (default `$TRANSFERKIT_HOME/image_cache`),
  memory-mapped when read. The file name is the SHA-256 of the image file's bytes plus the decoding
  recipe, so an edited image, or a spec that decodes differently, gets a new entry and never a stale
  one; unchanged images are reused by the next run, whichever folder or name they have.

The pixels are those `load_image` returns (EXIF orientation applied, alpha composited on white), so a
cached run sees exactly the tensors an uncached run sees -- with one exception a task opts into: a
`short_side` (classification's `data.cache_short_side`, by default twice the network's input size)
stores larger images reduced so their shorter side is that long. A camera photo then costs its decode
once and a few hundred KB of cache instead of tens of MB, and every epoch crops from the small copy.
Only tasks whose labels do not live in pixel coordinates (classification) reduce; detection, keypoints
and segmentation cache full size. Before filling, the cache states its size and refuses, with the way
out, when the memory or disk it needs is not there.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..io import atomic_write_with
from .images import ImageError, load_image, reduced_size

log = logging.getLogger("transferkit")

CACHE_MODES = ("none", "ram", "disk")
# What the cached arrays are. Bump when load_image's output changes, so old disk entries are not reused.
RECIPE = "rgb8-upright-v1"
# Keep this much memory free beyond the cache itself (the run, its loaders and the OS need it too).
RAM_HEADROOM = 0.5


def available_memory() -> int:
    """Bytes of memory the system can give without swapping (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def default_cache_dir() -> Path:
    from ..zoo.checksums import transferkit_home

    return transferkit_home() / "image_cache"


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header alone (None when the header does not read)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - the full decode in fill() reports the reason
        return None


def _decoded_size(path: Path, short_side: int | None = None) -> int | None:
    """Bytes of the decoded (and, with `short_side`, reduced) RGB array, from the header alone."""
    size = _header_size(path)
    if size is None:
        return None
    w, h = reduced_size(size, short_side) if short_side else size
    return w * h * 3


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _save_npy(path: Path, pixels: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temp file's name
        np.save(f, pixels, allow_pickle=False)


class ImageCache:
    """Decoded images of a data module, by path. `fill(paths)` decodes (or finds on disk) a split's
    images and returns the ones that do not decode, as `undecodable` does; `load(path)` returns the
    cached pixels as a PIL image, decoding files it was never given."""

    def __init__(self, mode: str, max_pixels: int | None, folder: str | os.PathLike | None = None,
                 threads: int | None = None, short_side: int | None = None):
        if mode not in ("ram", "disk"):
            raise ValueError(f"cache mode must be 'ram' or 'disk', not {mode!r}")
        self.mode = mode
        self.max_pixels = max_pixels
        self.short_side = short_side  # larger images are kept reduced to this shorter side (None: full size)
        self.recipe = RECIPE if not short_side else f"{RECIPE}-short{short_side}"
        self.folder = Path(folder) if folder else (default_cache_dir() if mode == "disk" else None)
        self.threads = threads or min(8, os.cpu_count() or 1)
        # ram: path -> (buffer index, offset, height, width); disk: path -> .npy file
        self._where: dict[str, tuple[int, int, int, int] | Path] = {}
        self._buffers: list[torch.Tensor] = []
        self.stats = {"images": 0, "bytes": 0, "reused": 0}

    # -- filling (main process, before any loader) ------------------------------------------------
    def fill(self, paths: Iterable[str | os.PathLike], what: str = "images") -> dict[str, str]:
        """Decode `paths` into the cache; {path: reason} for those that do not decode (left out)."""
        paths = [Path(p) for p in paths if str(p) not in self._where]
        if not paths:
            return {}
        return self._fill_ram(paths, what) if self.mode == "ram" else self._fill_disk(paths, what)

    def _decode_all(self, paths: list[Path], store) -> dict[str, str]:
        def one(i_path):
            i, path = i_path
            try:
                store(i, path, np.asarray(self._decode(path)))
            except ImageError as e:
                return str(path), str(e)
            return None

        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            return dict(r for r in pool.map(one, enumerate(paths)) if r is not None)

    def _decode(self, path: str | os.PathLike) -> Image.Image:
        return load_image(path, max_pixels=self.max_pixels, short_side=self.short_side)

    def _reduction(self) -> str:
        return f", larger ones reduced to a {self.short_side} px shorter side" if self.short_side else ""

    def _fill_ram(self, paths: list[Path], what: str) -> dict[str, str]:
        sizes = [_decoded_size(p, self.short_side) or 0 for p in paths]
        need, free = sum(sizes), available_memory()
        log.info("data.cache=ram: %d %s, %s decoded%s (%s of memory available)", len(paths), what,
                 human_bytes(need), self._reduction(), human_bytes(free))
        if need > free * RAM_HEADROOM:
            raise DataError(f"data.cache=ram needs {human_bytes(need)} for {len(paths)} decoded {what} but only "
                            f"{human_bytes(free)} of memory is available: use data.cache=disk (memory-mapped "
                            f"files under data.cache_dir) or data.cache=none")
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        buffer = torch.empty(max(int(offsets[-1]), 1), dtype=torch.uint8).share_memory_()
        index = len(self._buffers)
        self._buffers.append(buffer)
        flat = buffer.numpy()

        def store(i: int, path: Path, pixels: np.ndarray) -> None:
            h, w = pixels.shape[:2]
            if h * w * 3 != sizes[i]:  # the header disagreed with the pixels (rare): decoded on every read
                return
            flat[offsets[i]:offsets[i] + sizes[i]] = pixels.reshape(-1)
            self._where[str(path)] = (index, int(offsets[i]), h, w)

        bad = self._decode_all(paths, store)
        self.stats["images"] += len(paths) - len(bad)
        self.stats["bytes"] += need
        return bad

    def _entry(self, path: Path) -> Path:
        digest = file_digest(path)
        return self.folder / digest[:2] / f"{digest}.{self.recipe}.npy"

    def _fill_disk(self, paths: list[Path], what: str) -> dict[str, str]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"data.cache_dir {self.folder}: cannot create it ({e.strerror}); set "
                            f"data.cache_dir to a writable folder, or data.cache=none") from None
        entries, missing, bad = {}, [], {}
        for p in paths:
            try:
                entries[p] = self._entry(p)
            except OSError as e:
                bad[str(p)] = f"{p}: cannot read ({e.strerror})"
                continue
            if not entries[p].is_file():
                missing.append(p)
        need = sum(_decoded_size(p, self.short_side) or 0 for p in missing)
        free = shutil.disk_usage(self.folder).free
        log.info("data.cache=disk: %d %s (%d already cached), %s to write under %s%s (%s free)", len(entries), what,
                 len(entries) - len(missing), human_bytes(need), self.folder, self._reduction(), human_bytes(free))
        if need > free:
            raise DataError(f"data.cache=disk needs {human_bytes(need)} under {self.folder} but only "
                            f"{human_bytes(free)} is free: set data.cache_dir to a larger disk, or data.cache=none")
        order = list(entries)
        todo = set(missing)

        def store(i: int, path: Path, pixels: np.ndarray) -> None:
            target = entries[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_with(target, lambda tmp: _save_npy(tmp, pixels))

        # Entries already on disk are checked with a read, not a decode (a truncated .npy is rewritten).
        reuse = []
        for p in order:
            if p not in todo:
                try:
                    h, w = np.load(entries[p], mmap_mode="r", allow_pickle=False).shape[:2]
                except (OSError, ValueError, EOFError):
                    todo.add(p)
                    continue
                if self.short_side:  # the entry may be reduced: the limit is on the file's own size
                    w, h = _header_size(p) or (w, h)
                if self.max_pixels is not None and h * w > self.max_pixels:
                    todo.add(p)  # over this run's data.max_image_pixels: the decode reports it as load_image does
                else:
                    reuse.append(p)
        bad.update(self._decode_all([p for p in order if p in todo], store))
        for p in order:
            if str(p) not in bad:
                self._where[str(p)] = entries[p]
        self.stats["images"] += len(order) - len(bad)
        self.stats["reused"] += len(reuse)
        self.stats["bytes"] += need
        return bad

    # -- reading (any process) --------------------------------------------------------------------
    def pixels(self, path: str | os.PathLike) -> np.ndarray | None:
        """The cached HxWx3 uint8 array of `path`, or None when it was never cached."""
        where = self._where.get(str(path))
        if where is None:
            return None
        if isinstance(where, Path):
            return np.load(where, mmap_mode="r", allow_pickle=False)
        index, offset, h, w = where
        return self._buffers[index].numpy()[offset:offset + h * w * 3].reshape(h, w, 3)

    def load(self, path: str | os.PathLike) -> Image.Image:
        """The image at `path` as load_image returns it, from the cache when it holds it."""
        pixels = self.pixels(path)
        if pixels is None:
            return self._decode(path)
        return Image.fromarray(np.array(pixels), "RGB")  # a copy: augmentations must not write into the cache

    def __len__(self) -> int:
        return len(self._where)


def read_image(path: str | os.PathLike, max_pixels: int | None, cache: ImageCache | None = None) -> Image.Image:
    """What every image Dataset calls: the cached pixels when a cache holds them, else a decode."""
    return cache.load(path) if cache is not None else load_image(path, max_pixels=max_pixels)


def build_cache(mode: str, max_pixels: int | None, folder: str | None,
                short_side: int | None = None) -> ImageCache | None:
    """The cache `data.cache` asks for (None for `none`)."""
    return None if mode == "none" else ImageCache(mode, max_pixels, folder, short_side=short_side)
