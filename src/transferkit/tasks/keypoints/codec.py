"""Heatmap targets and sub-pixel decoding (torch). `decode_heatmaps` is plain tensor arithmetic so that the same
function runs eagerly and traces into an ONNX graph (opset 17) for exports that output decoded keypoints.

Heatmap pixel j covers crop-input pixels so that the two grids share their outer edges: x_heatmap =
(x_input + 0.5) * heatmap_w / input_w - 0.5 (pixel-index coordinates on both sides). Targets are unnormalised
Gaussians (peak 1) centred at the exact sub-pixel position, so decoding can recover it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DECODE_METHODS = ("dark", "quarter")


def _to_heatmap(value: torch.Tensor, input_px: float, heatmap_px: float) -> torch.Tensor:
    return (value + 0.5) * (heatmap_px / input_px) - 0.5


def _to_input(value: torch.Tensor, input_px: float, heatmap_px: float) -> torch.Tensor:
    return (value + 0.5) * (input_px / heatmap_px) - 0.5


def encode_heatmaps(kps, input_size, heatmap_size, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, h, w) float32 Gaussian targets (sigma in heatmap px) and (K,) weights: 0 for v == 0 or outside the crop."""
    kps = torch.as_tensor(np.asarray(kps, np.float32) if not torch.is_tensor(kps) else kps, dtype=torch.float32)
    in_w, in_h = float(input_size[0]), float(input_size[1])
    hm_w, hm_h = int(heatmap_size[0]), int(heatmap_size[1])
    x, y, v = kps[:, 0], kps[:, 1], kps[:, 2]
    inside = (v > 0) & (x >= -0.5) & (x <= in_w - 0.5) & (y >= -0.5) & (y <= in_h - 0.5)
    mx, my = _to_heatmap(x, in_w, hm_w), _to_heatmap(y, in_h, hm_h)
    xs = torch.arange(hm_w, dtype=torch.float32)
    ys = torch.arange(hm_h, dtype=torch.float32)
    gx = torch.exp(-((xs[None, :] - mx[:, None]) ** 2) / (2.0 * sigma ** 2))  # (K, w)
    gy = torch.exp(-((ys[None, :] - my[:, None]) ** 2) / (2.0 * sigma ** 2))  # (K, h)
    weights = inside.to(torch.float32)
    heatmaps = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]
    return heatmaps, weights


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2.5 * sigma)))
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    line = torch.exp(-(steps ** 2) / (2.0 * sigma ** 2))
    line = line / line.sum()
    return (line[:, None] * line[None, :])[None, None]  # (1, 1, k, k)


def _neighbours(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, edge: str = "replicate") -> torch.Tensor:
    """Values at (x + dx, y + dy) for dx, dy in -1, 0, 1: (N, K, 9), dy-major; past the border `edge` decides
    ("replicate": the edge pixel, "zeros": 0)."""
    n, k, h, w = maps.shape
    if edge == "zeros":
        padded = F.pad(maps.reshape(-1, 1, h, w), (1, 1, 1, 1))
    else:
        padded = F.pad(maps.reshape(-1, 1, h, w), (1, 1, 1, 1), mode="replicate")
    padded = padded.reshape(maps.shape[0], k, -1)
    row = w + 2
    centre = (y + 1) * row + (x + 1)
    offsets = torch.tensor([dy * row + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=torch.int64,
                           device=maps.device)
    return torch.gather(padded, 2, centre[..., None] + offsets)


def decode_heatmaps(heatmaps: torch.Tensor, input_size, method: str = "dark", *, blur_sigma: float = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, 2) keypoints in crop-input px and (N, K) scores (heatmap maxima) from (N, K, h, w) heatmaps.

    "dark": the Taylor step on the log of the heatmap blurred by `blur_sigma` heatmap px (DARK, Zhang et al.
    2020; 0 skips the blur, exact for clean Gaussians); "quarter": a quarter pixel towards the higher neighbour."""
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown heatmap decoding {method!r}; use one of {', '.join(DECODE_METHODS)}")
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    flat = heatmaps.flatten(2)
    score, index = flat.max(dim=2)
    x = torch.remainder(index, w)
    y = torch.div(index, w, rounding_mode="floor")
    if method == "quarter":
        around = _neighbours(heatmaps, x, y, edge="zeros")
        ox = 0.25 * torch.sign(around[..., 5] - around[..., 3])
        oy = 0.25 * torch.sign(around[..., 7] - around[..., 1])
    else:
        if blur_sigma > 0:
            # Edge pixels repeat outwards: zeros (the DARK paper's padding) would pull peaks near the border inwards.
            kernel = _gaussian_kernel(blur_sigma).to(device=heatmaps.device, dtype=heatmaps.dtype)
            pad = kernel.shape[-1] // 2
            padded = F.pad(heatmaps.reshape(-1, 1, h, w), (pad, pad, pad, pad), mode="replicate")
            blurred = F.conv2d(padded, kernel).reshape(heatmaps.shape)
        else:
            blurred = heatmaps
        # DARK keeps each map's peak height after blurring, then works on its log.
        peak = blurred.flatten(2).max(dim=2).values
        blurred = blurred * (score / peak.clamp(min=1e-10))[..., None, None]
        log = torch.log(blurred.clamp(min=1e-10))
        # The Taylor step starts one pixel inside the map, so all its finite differences use real pixels; a
        # peak on the edge pixel is then found by a step of up to one pixel outwards.
        cx = x.clamp(min=1, max=max(w - 2, 0)) if w >= 3 else x
        cy = y.clamp(min=1, max=max(h - 2, 0)) if h >= 3 else y
        a = _neighbours(log, cx, cy)
        dx = 0.5 * (a[..., 5] - a[..., 3])
        dy = 0.5 * (a[..., 7] - a[..., 1])
        dxx = a[..., 5] - 2.0 * a[..., 4] + a[..., 3]
        dyy = a[..., 7] - 2.0 * a[..., 4] + a[..., 1]
        dxy = 0.25 * (a[..., 8] - a[..., 6] - a[..., 2] + a[..., 0])
        det = dxx * dyy - dxy * dxy
        # A maximum has a negative-definite Hessian; anywhere else (flat or saddle) the step is not trusted.
        ok = (det > 1e-12) & (dxx < 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        step_x = torch.where(ok, -(dyy * dx - dxy * dy) / safe, torch.zeros_like(det))
        step_y = torch.where(ok, -(dxx * dy - dxy * dx) / safe, torch.zeros_like(det))
        # Never more than one pixel from the maximum pixel.
        ox = (cx - x).to(heatmaps.dtype) + step_x
        oy = (cy - y).to(heatmaps.dtype) + step_y
        ox = torch.where(ok, ox, torch.zeros_like(ox)).clamp(-1.0, 1.0)
        oy = torch.where(ok, oy, torch.zeros_like(oy)).clamp(-1.0, 1.0)
    in_w, in_h = float(input_size[0]), float(input_size[1])
    px = _to_input(x.to(heatmaps.dtype) + ox, in_w, w)
    py = _to_input(y.to(heatmaps.dtype) + oy, in_h, h)
    return torch.stack([px, py], dim=-1), score

