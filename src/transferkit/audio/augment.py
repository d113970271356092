"""Training-time augmentation of speech: speed perturbation and additive noise on the wave, SpecAugment
time and frequency masks on the log-mel features. Every random choice comes from the Generator passed in,
so a seeded run augments the same way twice."""
from __future__ import annotations

from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch


def speed_perturb(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """`wave` played `factor` times as fast (duration / factor, pitch moves with it, as sox `speed` does);
    `sr` is kept. The factor is used to 1/100 precision."""
    if not 0.2 <= factor <= 5.0:
        raise ValueError(f"speed factor {factor} is outside 0.2-5")
    from scipy.signal import resample_poly

    ratio = Fraction(factor).limit_denominator(100)
    if ratio == 1:
        return np.asarray(wave, dtype=np.float32).copy()
    # The samples, taken as recorded at sr * factor, resampled to sr: len / factor samples.
    out = resample_poly(np.asarray(wave, dtype=np.float64), ratio.denominator, ratio.numerator)
    return out.astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, noise: np.ndarray | None = None
              ) -> np.ndarray:
    """`wave` plus noise scaled to exactly `snr_db` (signal power over noise power, over the whole clip):
    white Gaussian noise, or `noise` (e.g. a recorded room) looped from a random start. Not clipped, so the
    SNR holds; a silent wave or silent noise returns the wave unchanged."""
    wave = np.asarray(wave, dtype=np.float32)
    if noise is None:
        extra = rng.standard_normal(len(wave))
    else:
        noise = np.asarray(noise, dtype=np.float64).reshape(-1)
        if noise.size == 0:
            return wave.copy()
        start = int(rng.integers(len(noise)))
        extra = np.resize(np.roll(noise, -start), len(wave))
    signal_power = float(np.mean(np.square(wave, dtype=np.float64))) if len(wave) else 0.0
    noise_power = float(np.mean(np.square(extra))) if len(extra) else 0.0
    if signal_power == 0.0 or noise_power == 0.0:
        return wave.copy()
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (wave + scale * extra).astype(np.float32)


def spec_augment(features: torch.Tensor | np.ndarray, rng: np.random.Generator, time_masks: int, time_width: int,
                 freq_masks: int, freq_width: int, *, fill: float | None = None,
                 lengths: Sequence[int] | None = None) -> torch.Tensor | np.ndarray:
    """A masked copy of (n_mels, frames) or (N, n_mels, frames) features: per example, `time_masks` stretches of
    0..`time_width` frames and `freq_masks` bands of 0..`freq_width` mel bins set to `fill` (default: that
    example's mean). `lengths` keeps time masks inside each example's real frames (the rest is padding)."""
    is_numpy = isinstance(features, np.ndarray)
    out = torch.from_numpy(np.array(features)) if is_numpy else features.clone()
    batch = out if out.dim() == 3 else out.unsqueeze(0)
    if batch.dim() != 3:
        raise ValueError(f"spec_augment takes (n_mels, frames) or (N, n_mels, frames), got {tuple(out.shape)}")
    n_mels, frames = batch.shape[1], batch.shape[2]
    for i in range(batch.shape[0]):
        length = min(int(lengths[i]), frames) if lengths is not None else frames
        value = float(batch[i, :, :length].mean()) if fill is None and length else (fill or 0.0)
        for _ in range(freq_masks):
            width = int(rng.integers(0, min(freq_width, n_mels) + 1))
            start = int(rng.integers(0, n_mels - width + 1))
            batch[i, start:start + width, :length] = value
        for _ in range(time_masks):
            width = int(rng.integers(0, min(time_width, length) + 1))
            start = int(rng.integers(0, length - width + 1))
            batch[i, :, start:start + width] = value
    return out.numpy() if is_numpy else out


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation; every probability 0 (the default) means none."""

    speed_prob: float = 0.0
    speed_min: float = 0.9
    speed_max: float = 1.1
    noise_prob: float = 0.0
    snr_min: float = 10.0  # dB
    snr_max: float = 30.0
    spec_prob: float = 0.0
    time_masks: int = 2
    time_width: int = 40  # frames (10 ms each at Whisper's hop)
    freq_masks: int = 2
    freq_width: int = 15  # mel bins


class AudioAugment:
    """Applies the augmentations `cfg` enables: `wave()` before features, `features()` after. `cfg` is an
    AugmentConfig or any object (a spec section) or dict with the same field names; missing ones default."""

    def __init__(self, cfg: Any = None):
        defaults = AugmentConfig()
        values = {}
        for f in fields(AugmentConfig):
            if isinstance(cfg, dict):
                values[f.name] = cfg.get(f.name, getattr(defaults, f.name))
            else:
                values[f.name] = getattr(cfg, f.name, getattr(defaults, f.name))
        self.cfg = AugmentConfig(**values)
        c = self.cfg
        for name in ("speed_prob", "noise_prob", "spec_prob"):
            if not 0.0 <= getattr(c, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(c, name)}")
        if not 0.2 <= c.speed_min <= c.speed_max <= 5.0:
            raise ValueError(f"need 0.2 <= speed_min <= speed_max <= 5, got {c.speed_min} and {c.speed_max}")
        if c.snr_min > c.snr_max:
            raise ValueError(f"snr_min {c.snr_min} is above snr_max {c.snr_max}")

    @property
    def enabled(self) -> bool:
        return any(p > 0 for p in (self.cfg.speed_prob, self.cfg.noise_prob, self.cfg.spec_prob))

    def wave(self, wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        if c.speed_prob and rng.random() < c.speed_prob:
            factor = round(float(rng.uniform(c.speed_min, c.speed_max)), 2)
            wave = speed_perturb(wave, sr, factor)
        if c.noise_prob and rng.random() < c.noise_prob:
            wave = add_noise(wave, float(rng.uniform(c.snr_min, c.snr_max)), rng)
        return wave

    def features(self, features: torch.Tensor | np.ndarray, rng: np.random.Generator,
                 lengths: Sequence[int] | None = None) -> torch.Tensor | np.ndarray:
        c = self.cfg
        if c.spec_prob and rng.random() < c.spec_prob:
            return spec_augment(features, rng, c.time_masks, c.time_width, c.freq_masks, c.freq_width,
                                lengths=lengths)
        return features
