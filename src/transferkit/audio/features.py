"""Log-mel spectrograms computed exactly as Whisper's feature extractor does (periodic Hann window, centred
STFT with reflect padding, last frame dropped, Slaney mel filters, log10, floor at max - 8, (x + 4) / 4), in
torch, so a pretrained Whisper encoder sees what it was trained on, on any device, without 30 s padding."""
from __future__ import annotations

import functools

import numpy as np
import torch

WHISPER_SAMPLE_RATE = 16000
WHISPER_HOP = 160
WHISPER_CHUNK_SECONDS = 30.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = 3.0 * hz / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = 200.0 * mel / 3.0
    log = 1000.0 * np.exp(np.log(6.4) * (mel - 15.0) / 27.0)
    return np.where(mel >= 15.0, log, linear)


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters from 0 Hz to Nyquist on the Slaney scale, area-normalised."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return torch.from_numpy(weights.astype(np.float32))


def frames_for(seconds: float, sample_rate: int = WHISPER_SAMPLE_RATE, hop: int = WHISPER_HOP) -> int:
    """Feature frames `log_mel` gives for `seconds` of audio (30 s -> 3000 at Whisper's settings)."""
    return int(round(seconds * sample_rate)) // hop


def log_mel(wave: torch.Tensor | np.ndarray, sample_rate: int = WHISPER_SAMPLE_RATE, n_mels: int = 80,
            n_fft: int = 400, hop: int = WHISPER_HOP, *, pad_to: float | None = None) -> torch.Tensor:
    """(N, n_mels, samples // hop) Whisper log-mel features of a (N, T) or (T,) wave batch, in float32.

    Each row's floor (its maximum - 8) is its own, as Whisper's extractor does per example; rows padded
    with zeros to a common length therefore match the extractor given the same padded rows. `pad_to`
    (seconds) zero-pads the waves to that length first (30.0 gives Whisper's fixed 3000 frames)."""
    x = torch.as_tensor(wave)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"log_mel takes a (T,) or (N, T) wave, got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    if pad_to is not None:
        target = int(round(pad_to * sample_rate))
        if x.shape[1] > target:
            raise ValueError(f"wave of {x.shape[1] / sample_rate:.2f} s is longer than pad_to={pad_to:g} s")
        x = torch.nn.functional.pad(x, (0, target - x.shape[1]))
    frames = x.shape[1] // hop
    # Reflect padding needs more than n_fft // 2 samples; a shorter clip is zero-extended (frames unchanged).
    if x.shape[1] <= n_fft // 2:
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[1]))
    window = torch.hann_window(n_fft, device=x.device, dtype=torch.float32)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[..., :frames].abs() ** 2
    mel = mel_filters(sample_rate, n_fft, n_mels).to(x.device) @ power
    log = torch.clamp(mel, min=1e-10).log10()
    if frames > 0:
        floor = log.amax(dim=(1, 2), keepdim=True) - 8.0
        log = torch.maximum(log, floor)
    return (log + 4.0) / 4.0


def feature_seconds(frames: int, sample_rate: int = WHISPER_SAMPLE_RATE, hop: int = WHISPER_HOP) -> float:
    """Seconds of audio that `frames` feature frames cover."""
    return frames * hop / sample_rate
