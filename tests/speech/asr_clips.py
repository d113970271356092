"""espeak-ng clips for the speech-model tests: 16 kHz WAV files and NeMo manifests, written with the standard
library, soundfile and scipy only (the audio layer under test is not used to make its own inputs)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

SENTENCES = ["hello world", "the red cat sat down", "open the blue door", "a dog runs home",
             "turn the light on", "the sun is hot", "we like green tea", "stop the car now"]


def need_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 160) -> Path:
    """`text` spoken by espeak-ng into a 16 kHz mono WAV at `path`."""
    need_espeak()
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True,
                   capture_output=True)
    wave, sr = sf.read(raw, dtype="float32")
    raw.unlink()
    wave = resample_poly(wave, 16000, sr).astype(np.float32)
    sf.write(path, wave, 16000, subtype="PCM_16")
    return path


def manifest(folder: Path, name: str, texts: list[str], voice: str = "en-us", speed: int = 160) -> Path:
    """A NeMo manifest (paths relative to it) of `texts` spoken by one voice."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        wav = speak(text, folder / f"{name}_{i:03d}.wav", voice, speed)
        lines.append(json.dumps({"audio_filepath": wav.name, "duration": round(sf.info(wav).duration, 3),
                                 "text": text}))
    path = folder / f"{name}.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
