"""Augmentation: speed perturbation, noise at a set SNR, SpecAugment masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_helpers import peak_hz, sine
from transferkit.audio.augment import AudioAugment, AugmentConfig, add_noise, spec_augment, speed_perturb


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_changes_duration_by_the_factor(factor):
    wave = sine(500, 2.0, 16000)
    out = speed_perturb(wave, 16000, factor)
    assert abs(len(out) - len(wave) / factor) <= 1
    assert peak_hz(out, 16000) == pytest.approx(500 * factor, abs=2)  # pitch moves with the speed
    assert out.dtype == np.float32


def test_speed_one_is_a_copy_and_bad_factors_refused():
    wave = sine(500, 0.1, 16000)
    out = speed_perturb(wave, 16000, 1.0)
    assert np.array_equal(out, wave) and out is not wave
    with pytest.raises(ValueError):
        speed_perturb(wave, 16000, 0)


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_at_the_requested_snr(snr):
    rng = np.random.default_rng(0)
    wave = sine(300, 1.0, 16000, amplitude=0.3)
    for noise in (None, sine(50, 0.3, 16000) + 0.1 * rng.standard_normal(4800).astype(np.float32)):
        out = add_noise(wave, snr, rng, noise)
        measured = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((out - wave).astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.5)
    assert np.array_equal(add_noise(np.zeros(100, np.float32), 10, rng), np.zeros(100))


def test_spec_augment_masks_count_and_width():
    rng = np.random.default_rng(1)
    features = torch.zeros(3, 80, 200)
    widest_t = widest_f = 0
    for _ in range(30):
        out = spec_augment(features, rng, time_masks=2, time_width=10, freq_masks=1, freq_width=8, fill=-5.0)
        assert out.shape == features.shape and torch.count_nonzero(features) == 0  # the input is untouched
        for example in out:
            masked_frames = (example == -5.0).all(dim=0)
            masked_bins = (example == -5.0).all(dim=1)
            assert int(masked_frames.sum()) <= 2 * 10
            assert int(masked_bins.sum()) <= 8
            assert _runs(masked_frames) <= 2 and _runs(masked_bins) <= 1
            widest_t = max(widest_t, _longest_run(masked_frames))
            widest_f = max(widest_f, int(masked_bins.sum()))
    assert 10 <= widest_t <= 20 and widest_f == 8  # the widths reach, and stay within, the limits


def test_spec_augment_numpy_lengths_and_mean_fill():
    rng = np.random.default_rng(2)
    features = np.arange(2 * 4 * 50, dtype=np.float32).reshape(2, 4, 50)
    out = spec_augment(features, rng, time_masks=3, time_width=20, freq_masks=0, freq_width=0, lengths=[30, 50])
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out[0, :, 30:], features[0, :, 30:])  # padding is never masked
    changed = (out[0] != features[0]).any(axis=0)
    assert np.allclose(out[0][:, changed], features[0, :, :30].mean())


def test_audio_augment_applies_what_is_enabled():
    wave = sine(400, 1.0, 16000)
    off = AudioAugment(None)
    assert not off.enabled and off.wave(wave, 16000, np.random.default_rng(0)) is wave
    on = AudioAugment({"speed_prob": 1.0, "speed_min": 1.2, "speed_max": 1.2, "noise_prob": 1.0,
                       "snr_min": 20, "snr_max": 20, "spec_prob": 1.0})
    out = on.wave(wave, 16000, np.random.default_rng(0))
    assert abs(len(out) - len(wave) / 1.2) <= 1 and not np.allclose(out, speed_perturb(wave, 16000, 1.2))
    feats = on.features(torch.ones(1, 80, 300), np.random.default_rng(0))
    assert feats.shape == (1, 80, 300)
    assert AudioAugment(AugmentConfig(spec_prob=0.5)).cfg.time_masks == 2
    with pytest.raises(ValueError, match="speed_prob"):
        AudioAugment({"speed_prob": 2})


def _runs(mask: torch.Tensor) -> int:
    m = mask.to(torch.int8)
    return int((m[1:] > m[:-1]).sum() + m[0])


def _longest_run(mask: torch.Tensor) -> int:
    best = current = 0
    for value in mask.tolist():
        current = current + 1 if value else 0
        best = max(best, current)
    return best
