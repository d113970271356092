"""Heatmap targets and decoding: a round trip recovers sub-pixel positions; the decoder exports to ONNX."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from transferkit.tasks.keypoints.codec import decode_heatmaps, encode_heatmaps

INPUT, HEATMAP = (192, 256), (48, 64)  # w, h: stride 4


def _random_points(seed: int, count: int, margin: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = -0.5 + margin
    return np.c_[rng.uniform(lo, INPUT[0] - 0.5 - margin, count), rng.uniform(lo, INPUT[1] - 0.5 - margin, count),
                 np.full(count, 2.0)]


def _heatmap_error(kps: np.ndarray, **decode) -> np.ndarray:
    heatmaps, _ = encode_heatmaps(kps, INPUT, HEATMAP, sigma=2.0)
    xy, _ = decode_heatmaps(heatmaps[None], INPUT, **decode)
    return np.abs(xy[0].numpy() - kps[:, :2]) * HEATMAP[0] / INPUT[0]


def test_targets_peak_at_one_where_the_keypoint_is_and_weights_drop_unusable_points():
    kps = np.array([[100.0, 60.0, 2], [10.0, 10.0, 0], [300.0, 10.0, 2], [-0.5, 255.5, 1]], np.float32)
    heatmaps, weights = encode_heatmaps(kps, INPUT, HEATMAP, sigma=2.0)
    assert heatmaps.shape == (4, 64, 48) and heatmaps.dtype == torch.float32
    assert weights.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert heatmaps[1].abs().max() == 0 and heatmaps[2].abs().max() == 0
    assert heatmaps[0].max() <= 1.0 and heatmaps[0].max() > 0.9
    y, x = divmod(int(heatmaps[0].argmax()), 48)
    assert (x, y) == (25, 15)  # (100 + 0.5) / 4 - 0.5 = 24.6, (60 + 0.5) / 4 - 0.5 = 14.6


def test_dark_round_trip_is_sub_pixel_for_random_positions():
    assert _heatmap_error(_random_points(0, 400, margin=8.0)).max() < 0.25  # two heatmap px from the border


def test_unblurred_dark_is_exact_up_to_the_border():
    assert _heatmap_error(_random_points(1, 400, margin=0.0), blur_sigma=0).max() < 0.01


def test_quarter_offset_is_within_half_a_heatmap_pixel():
    assert _heatmap_error(_random_points(2, 400, margin=8.0), method="quarter").max() <= 0.5


def test_dark_stays_close_on_noisy_heatmaps():
    kps = _random_points(3, 200, margin=8.0)
    heatmaps, _ = encode_heatmaps(kps, INPUT, HEATMAP, sigma=2.0)
    noisy = 0.8 * heatmaps + 0.03 * torch.randn(heatmaps.shape, generator=torch.Generator().manual_seed(0))
    xy, score = decode_heatmaps(noisy[None], INPUT)
    error = np.abs(xy[0].numpy() - kps[:, :2]) / 4
    assert error.mean() < 0.1 and error.max() < 0.5
    assert score.shape == (1, 200) and float(score.min()) > 0.7


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="dark, quarter"):
        decode_heatmaps(torch.zeros(1, 1, 4, 4), (16, 16), method="argmax")


@pytest.mark.parametrize("method", ["dark", "quarter"])
def test_decoding_exports_to_onnx_and_gives_the_same_keypoints(method):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Decode(torch.nn.Module):
        def forward(self, heatmaps):
            return decode_heatmaps(heatmaps, (64, 96), method)

    batch = torch.stack([encode_heatmaps(np.c_[np.random.default_rng(s).uniform(0, 63, 5),
                                               np.random.default_rng(s + 9).uniform(0, 95, 5), np.full(5, 2)],
                                         (64, 96), (16, 24), 2.0)[0] for s in range(3)])
    buf = io.BytesIO()
    torch.onnx.export(Decode(), (batch,), buf, dynamo=False, opset_version=17, input_names=["heatmaps"],
                      output_names=["keypoints", "scores"], dynamic_axes={"heatmaps": {0: "batch"}})
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    xy, score = decode_heatmaps(batch, (64, 96), method)
    for rows in (batch, batch[:1]):  # the batch axis stays dynamic
        got_xy, got_score = session.run(None, {"heatmaps": rows.numpy()})
        np.testing.assert_allclose(got_xy, xy[:len(rows)].numpy(), atol=1e-3)
        np.testing.assert_allclose(got_score, score[:len(rows)].numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["dark", "quarter"])
def test_untrained_or_flat_heatmaps_decode_to_finite_points_inside_the_crop(method):
    noise = torch.randn(2, 3, 16, 12, generator=torch.Generator().manual_seed(1))
    for maps in (noise, torch.zeros(2, 3, 16, 12), -noise.abs()):
        xy, score = decode_heatmaps(maps, (48, 64), method)
        assert torch.isfinite(xy).all() and torch.isfinite(score).all()
        assert (xy[..., 0] >= -0.5).all() and (xy[..., 0] <= 47.5).all()
        assert (xy[..., 1] >= -0.5).all() and (xy[..., 1] <= 63.5).all()


@pytest.mark.parametrize("method", ["dark", "quarter"])
def test_decoding_keeps_to_the_heatmaps_device(method):
    # A device other than the CPU (here torch's shape-only "meta" device) refuses any CPU tensor mixed in, as CUDA does.
    xy, score = decode_heatmaps(torch.zeros(2, 3, 16, 12, device="meta"), (48, 64), method)
    assert xy.device.type == "meta" and xy.shape == (2, 3, 2) and score.shape == (2, 3)
