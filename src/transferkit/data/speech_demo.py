"""Offline demo dataset for speech_to_text, spoken by Debian's espeak-ng.

`speech`: short requests from an office's day (orders, meetings, tickets) built from a fixed vocabulary
that includes made-up product names (Zentrix, Quorvo, ...), which no pretrained model has heard. Each
utterance gets its own voice, speed and pitch; the voices of val never speak in train, so val measures
how a model copes with new speakers. Audio is 16 kHz mono 16-bit WAV (espeak's 22.05 kHz resampled),
with a little silence before and after each utterance.

Files: `train/NNNN.wav`, `val/NNNN.wav`, NeMo manifests `train.json` and `val.json` (paths relative to
them; transcripts with capitals and punctuation, as people write them), and `long.wav`: `long` val-voice
utterances with pauses between them, for cutting long audio at pauses, with its transcript `long.txt`
and the true timings `long_reference.srt` (from the first to the last sounding sample of each utterance).

Val sentences are drawn first and train rejects any sentence val holds, so val does not change when
the training count changes. espeak-ng output depends only on its arguments, so a build is deterministic.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .demo import _rng, _write, register_demo

SAMPLE_RATE = 16000
# "en-gb+VARIANT" silently falls back to plain "en" in espeak-ng 1.51, so British variants are spelled "en+...".
TRAIN_VOICES = ("en-us", "en-gb", "en-us+m3", "en+f2", "en-gb-scotland", "en-us+f4", "en-gb-x-gbclan",
                "en-us-nyc+m5")
VAL_VOICES = ("en-gb-x-rp+f3", "en-us+m7", "en-gb-x-gbcwmd")
SPEEDS = (135, 185)  # words per minute, inclusive range
PITCHES = (30, 70)
_MAX_ATTEMPTS = 200
_INSTALL = "install it: apt-get install -y espeak-ng"

PRODUCTS = ("Zentrix", "Quorvo", "Plexar", "Vantique", "Drovella", "Kestrium", "Moxaline", "Telvaro")
_FILL = {
    "product": PRODUCTS,
    "item": ("router", "scanner", "headset", "license", "dashboard", "printer", "monitor", "server"),
    "items": ("routers", "scanners", "headsets", "licenses", "printers", "monitors", "servers", "keyboards"),
    "count": ("two", "three", "four", "five", "six", "ten", "twelve", "twenty"),
    "place": ("Oslo", "Berlin", "Lisbon", "Denver", "Nairobi", "Osaka", "Toronto", "Madrid"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "tomorrow", "next week"),
    "time": ("morning", "afternoon", "at noon", "at nine", "at four thirty", "after lunch"),
    "person": ("Anna", "the manager", "our supplier", "the support team", "Peter", "the new engineer"),
    "state": ("broken", "offline", "ready", "too slow", "back online", "out of stock"),
}
_TEMPLATES = (
    "Please order {count} {product} {items} for the {place} office.",
    "The {product} {item} in {place} is {state} again.",
    "Can you check the {product} license before {day}?",
    "{person} says the {product} update broke the {item}.",
    "Move the {product} meeting to {day} {time}.",
    "Our {product} {items} shipped {count} days late.",
    "Send {count} spare {items} to {place} by {day}.",
    "Is the {product} {item} still {state}?",
    "{person} will call about the {product} order {time}.",
    "We need {count} more {product} {items} before {day}.",
)


@dataclass(frozen=True)
class _Utterance:
    name: str  # path inside the dataset
    text: str
    voice: str
    speed: int
    pitch: int
    lead: float  # seconds of silence before and after
    tail: float


def _sentence(rng: np.random.Generator) -> str:
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    words = {key: options[int(rng.integers(len(options)))] for key, options in _FILL.items()}
    text = template.format(**words)
    return text[0].upper() + text[1:]


def _key(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def _plan(seed: int, split: str, count: int, voices: tuple[str, ...], taken: set[str], folder: str | None
          ) -> list[_Utterance]:
    """Utterances of one split: sentences not in `taken` (which grows), voices in turn from a seeded start."""
    plan = []
    offset = int(_rng(seed, "speech-voice", split).integers(len(voices)))
    for i in range(count):
        rng = _rng(seed, "speech", split, i)
        for _ in range(_MAX_ATTEMPTS):
            text = _sentence(rng)
            if _key(text) not in taken:
                break
        else:
            raise DataError(f"demo: could not make more than {i} distinct sentences for {split}; "
                            f"use a smaller {split}=")
        taken.add(_key(text))
        name = f"{folder}/{i:04d}.wav" if folder else f"{split}_{i:04d}"
        plan.append(_Utterance(name, text, voices[(offset + i) % len(voices)],
                               int(rng.integers(SPEEDS[0], SPEEDS[1] + 1)),
                               int(rng.integers(PITCHES[0], PITCHES[1] + 1)),
                               round(float(rng.uniform(0.1, 0.4)), 2), round(float(rng.uniform(0.1, 0.4)), 2)))
    return plan


def _espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise DataError(f"the speech demo is spoken by espeak-ng, which is not installed; {_INSTALL}")
    return path


def _speak(espeak: str, utt: _Utterance) -> np.ndarray:
    """The utterance at 16 kHz, float32, with its silences."""
    import soundfile as sf

    from ..audio.io import resample

    command = [espeak, "-v", utt.voice, "-s", str(utt.speed), "-p", str(utt.pitch), "--stdout", utt.text]
    try:
        done = subprocess.run(command, capture_output=True, check=True, timeout=60)
        wave, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
    except (subprocess.SubprocessError, OSError, RuntimeError) as e:
        detail = getattr(e, "stderr", b"") or b""
        raise DataError(f"espeak-ng failed for voice {utt.voice!r} ({detail.decode(errors='replace').strip() or e}); "
                        f"{_INSTALL}") from e
    if wave.ndim != 1 or len(wave) == 0:
        raise DataError(f"espeak-ng gave no audio for voice {utt.voice!r}; {_INSTALL}")
    wave = resample(wave, rate, SAMPLE_RATE)
    silence = (np.zeros(int(utt.lead * SAMPLE_RATE), np.float32), np.zeros(int(utt.tail * SAMPLE_RATE), np.float32))
    return np.concatenate([silence[0], wave, silence[1]])


def _wav_bytes(wave: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _seconds(wave: np.ndarray) -> float:
    return round(len(wave) / SAMPLE_RATE, 4)


@register_demo("speech", "speech_to_text",
               "espeak-ng requests with made-up product names in several voices, speeds and pitches; val voices "
               "never speak in train; 16 kHz WAV, NeMo manifests, and a long recording with pauses",
               train=120, val=40, long=8)
def _build_speech(out: Path, *, seed: int, train: int, val: int, long: int) -> dict:
    espeak = _espeak_path()
    taken: set[str] = set()
    plans = {"val": _plan(seed, "val", val, VAL_VOICES, taken, "val")}
    plans["long"] = _plan(seed, "long", long, VAL_VOICES, taken, None)
    plans["train"] = _plan(seed, "train", train, TRAIN_VOICES, taken, "train")
    everything = [u for split in ("train", "val", "long") for u in plans[split]]
    # espeak-ng runs as a subprocess, so two threads keep two cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        waves = dict(zip((u.name for u in everything), pool.map(lambda u: _speak(espeak, u), everything)))

    seconds: dict[str, float] = {}
    for split in ("train", "val"):
        rows = []
        for utt in plans[split]:
            wave = waves[utt.name]
            _write(out / utt.name, _wav_bytes(wave))
            rows.append({"audio_filepath": utt.name, "duration": _seconds(wave), "text": utt.text})
        _write(out / f"{split}.json", "".join(json.dumps(r) + "\n" for r in rows))
        seconds[split] = round(sum(r["duration"] for r in rows), 2)

    from ..audio.subtitles import srt_text

    pause_rng = _rng(seed, "speech-long-pauses")
    pieces, cues, clock = [np.zeros(SAMPLE_RATE // 2, np.float32)], [], 0.5
    for utt in plans["long"]:
        wave = waves[utt.name]
        sounding = np.flatnonzero(np.abs(wave) > 1e-3)  # espeak's own lead-in and trailing silence excluded
        cues.append((clock + sounding[0] / SAMPLE_RATE, clock + (sounding[-1] + 1) / SAMPLE_RATE, utt.text))
        pause = np.zeros(int(round(float(pause_rng.uniform(0.6, 1.6)), 2) * SAMPLE_RATE), np.float32)
        pieces += [wave, pause]
        clock += (len(wave) + len(pause)) / SAMPLE_RATE
    long_wave = np.concatenate(pieces)
    _write(out / "long.wav", _wav_bytes(long_wave))
    _write(out / "long.txt", " ".join(u.text for u in plans["long"]) + "\n")
    _write(out / "long_reference.srt", srt_text(cues))
    seconds["long"] = _seconds(long_wave)

    return {
        "counts": {"train": train, "val": val},
        "seconds": seconds,
        "sample_rate": SAMPLE_RATE,
        "voices": {"train": sorted({u.voice for u in plans["train"]}), "val": sorted({u.voice for u in plans["val"]}),
                   "long": sorted({u.voice for u in plans["long"]})},
        "products": list(PRODUCTS),
        "paths": {"train": "train.json", "val": "val.json", "long": "long.wav", "long_reference": "long_reference.srt"},
    }
