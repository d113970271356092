"""Silero VAD (the wheel's ONNX file) finds the speech in a clip padded with silences."""
from __future__ import annotations

import numpy as np
import pytest

from audio_helpers import espeak, have_espeak
from transferkit.audio import vad
from transferkit.audio.vad import SpeechSegmenter
from transferkit.errors import ModelError

SR = 16000


def _speech_span(wave: np.ndarray, offset: float) -> tuple[float, float]:
    """Where the clip's sound starts and ends (10 ms frames above -40 dBFS), in seconds from `offset`."""
    frames = wave[: len(wave) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt(np.mean(frames ** 2, axis=1)) > 0.01)
    return offset + loud[0] * 0.01, offset + (loud[-1] + 1) * 0.01


@pytest.fixture(scope="module")
def segmenter() -> SpeechSegmenter:
    return SpeechSegmenter()


@pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng (apt-get install espeak-ng)")
def test_segments_of_speech_between_silences(segmenter):
    first = espeak("please order three new routers for the office")
    second = espeak("the meeting moved to thursday afternoon", "en-gb")
    silence = [np.zeros(int(s * SR), np.float32) for s in (1.0, 1.5, 1.0)]
    wave = np.concatenate([silence[0], first, silence[1], second, silence[2]])
    truth = [_speech_span(first, 1.0), _speech_span(second, 2.5 + len(first) / SR)]

    found = segmenter.segments(wave, SR)
    assert len(found) == 2, found
    for (start, end), (true_start, true_end) in zip(found, truth):
        assert abs(start - true_start) < 0.3 and abs(end - true_end) < 0.3, (found, truth)

    # the same at another sample rate (resampled to the model's 16 kHz inside)
    from transferkit.audio.io import resample

    at_8k = segmenter.segments(resample(wave, SR, 8000), 8000)
    assert len(at_8k) == 2 and all(abs(a - b) < 0.1 for s, t in zip(at_8k, found) for a, b in zip(s, t))

    # long speech without pauses is cut so no piece is longer than max_segment
    pieces = segmenter.segments(wave, SR, max_segment=1.5)
    assert len(pieces) > 2 and all(end - start <= 1.5 + 1e-6 for start, end in pieces)
    assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:]))
    assert pieces[0][0] == pytest.approx(found[0][0]) and pieces[-1][1] == pytest.approx(found[-1][1])


def test_silence_has_no_segments(segmenter):
    assert segmenter.segments(np.zeros(3 * SR, np.float32), SR) == []
    assert segmenter.segments(np.zeros(10, np.float32), SR) == []
    assert len(segmenter.probabilities(np.zeros(SR, np.float32), SR)) == -(-SR // 512)


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps silero-vad"):
        SpeechSegmenter()


def test_unreadable_model_file(tmp_path):
    bad = tmp_path / "vad.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(ModelError, match="cannot load the Silero VAD model"):
        SpeechSegmenter(bad)
