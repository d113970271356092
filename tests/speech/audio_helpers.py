"""Small audio fixtures for the audio-layer tests: sines, silence, and espeak-ng speech made once per session."""
from __future__ import annotations

import functools
import io
import shutil
import subprocess

import numpy as np


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, sample_rate: int) -> float:
    """The frequency of the largest FFT bin."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sample_rate)[np.argmax(spectrum)])


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=None)
def espeak(text: str, voice: str = "en-us", sample_rate: int = 16000) -> np.ndarray:
    """espeak-ng speech of `text` at `sample_rate` (made once per text and voice in a test session)."""
    import soundfile as sf

    from transferkit.audio.io import resample

    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "--stdout", text],
                         check=True, capture_output=True).stdout
    wave, sr = sf.read(io.BytesIO(raw), dtype="float32")
    return resample(wave, sr, sample_rate)
