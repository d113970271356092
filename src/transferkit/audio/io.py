"""Reading and writing audio files: any format libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3 ...),
down-mixed to mono float32 and resampled to the rate a model needs."""
from __future__ import annotations

import io
import os
from math import gcd
from pathlib import Path

import numpy as np

from ..errors import DataError, first_line
from ..io import atomic_write_with

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")
_FORMAT_FIX = "convert it to 16-bit WAV or FLAC (e.g. `ffmpeg -i IN -ac 1 OUT.wav`)"


class UnreadableAudio(DataError):
    """libsndfile cannot open or decode the file; `reason` is its own one-line explanation."""

    def __init__(self, path: str, reason: str, fix: str = _FORMAT_FIX):
        # libsndfile's "Error opening 'PATH': Format not recognised." repeats the path we already name.
        reason = reason.split("': ", 1)[1] if reason.startswith("Error opening '") and "': " in reason else reason
        reason = reason.rstrip(".")
        super().__init__(f"cannot read audio file {path} ({reason}); {fix}")
        self.path, self.reason = path, reason


def _soundfile():
    try:
        import soundfile
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise DataError("reading audio needs the soundfile package: pip install soundfile") from e
    return soundfile


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"audio file {path} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"audio path {path} is not a file; pass an audio file")


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """`wave` (samples last) at `new_sr`, by polyphase filtering; the length becomes round(len * new/orig)."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {new_sr}")
    if orig_sr == new_sr or wave.shape[-1] == 0:
        return np.asarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(orig_sr), int(new_sr))
    out = resample_poly(np.asarray(wave, dtype=np.float64), new_sr // g, orig_sr // g, axis=-1)
    return out.astype(np.float32)


def decode_audio(data: bytes | Path | str, sample_rate: int | None = None, *, name: str | None = None,
                 offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """(mono float32 wave, its rate) from a file or bytes; resampled when `sample_rate` is given. `offset` and
    `duration` (seconds) read only that stretch (a NeMo manifest item of a longer file)."""
    sf = _soundfile()
    label = name or (str(data) if not isinstance(data, bytes) else "<audio bytes>")
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with sf.SoundFile(source) as f:
            sr = f.samplerate
            start = min(max(0, int(round(offset * sr))), f.frames) if offset else 0
            if start:
                f.seek(start)
            count = -1 if duration is None else max(0, int(round(duration * sr)))
            frames = f.read(count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as e:
        raise UnreadableAudio(label, first_line(e)) from e
    except OSError as e:
        raise UnreadableAudio(label, first_line(e), "check its permissions") from e
    wave = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if not np.all(np.isfinite(wave)):
        raise DataError(f"audio file {label} holds NaN or infinite samples; re-export it as 16-bit PCM")
    if sample_rate is not None and sr != sample_rate:
        wave, sr = resample(wave, sr, sample_rate), sample_rate
    # Float files may overshoot full scale; models expect [-1, 1].
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False), int(sr)


def load_audio(path: str | os.PathLike, sample_rate: int, *, offset: float = 0.0, duration: float | None = None
               ) -> np.ndarray:
    """The file as mono float32 in [-1, 1] at `sample_rate` (channels averaged), or the stretch `offset` ..
    `offset + duration` seconds; DataError naming the file when it is missing or libsndfile cannot decode it."""
    path = Path(path)
    _check_exists(path)
    return decode_audio(path, sample_rate, offset=offset, duration=duration)[0]


def audio_info(path: str | os.PathLike) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels) from the file's header, without decoding the samples."""
    sf = _soundfile()
    path = Path(path)
    _check_exists(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as e:
        raise UnreadableAudio(str(path), first_line(e)) from e
    except OSError as e:
        raise UnreadableAudio(str(path), first_line(e), "check its permissions") from e
    if info.samplerate <= 0:
        raise UnreadableAudio(str(path), f"sample rate {info.samplerate}")
    return float(info.frames) / info.samplerate, int(info.samplerate), int(info.channels)


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in the file, read from its header only."""
    return audio_info(path)[0]


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> Path:
    """Write a mono (T,) or multi-channel (T, C) wave as 16-bit PCM WAV, atomically; values are clipped to [-1, 1]."""
    sf = _soundfile()
    data = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)

    def write(tmp: Path) -> None:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")

    return atomic_write_with(path, write)
