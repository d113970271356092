"""Log-mel features equal Whisper's own feature extractor (built locally), without its 30 s padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_helpers import espeak, have_espeak, sine
from transferkit.audio.features import frames_for, log_mel

pytestmark = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return espeak("the quick brown fox jumps over the lazy dog")


def _whisper(extractor, waves, **kwargs) -> np.ndarray:
    return extractor(waves, sampling_rate=16000, return_tensors="np", **kwargs).input_features


def test_matches_whisper_on_a_real_clip_without_30s_padding(extractor, clip):
    ours = log_mel(torch.from_numpy(clip))
    assert ours.shape == (1, 80, len(clip) // 160) and ours.dtype == torch.float32
    assert ours.shape[2] == frames_for(len(clip) / 16000) < 3000
    expected = _whisper(extractor, clip, padding="longest")
    np.testing.assert_allclose(ours.numpy(), expected, atol=2e-4)


def test_pad_to_30s_matches_the_default_extractor(extractor, clip):
    ours = log_mel(clip, pad_to=30.0)
    assert ours.shape == (1, 80, 3000) == (1, 80, frames_for(30.0))
    np.testing.assert_allclose(ours.numpy(), _whisper(extractor, clip), atol=2e-4)


def test_batch_rows_are_independent(extractor, clip):
    short = sine(330, 0.7, 16000, amplitude=0.05)
    batch = np.zeros((2, len(clip)), np.float32)
    batch[0], batch[1, :len(short)] = clip, short
    ours = log_mel(torch.from_numpy(batch))
    assert ours.shape == (2, 80, len(clip) // 160)
    np.testing.assert_allclose(ours.numpy(), _whisper(extractor, [clip, short], padding="longest"), atol=2e-4)
    # each row has its own floor (max - 8), as Whisper's extractor does per example
    np.testing.assert_allclose(ours[1:].numpy(), log_mel(batch[1]).numpy(), atol=1e-5)


def test_tiny_and_odd_inputs():
    assert log_mel(np.zeros(100, np.float32)).shape == (1, 80, 0)
    assert log_mel(np.zeros(321, np.float32)).shape == (1, 80, 2)
    silence = log_mel(torch.zeros(2, 1600))
    assert torch.isfinite(silence).all()
    with pytest.raises(ValueError, match="longer than pad_to"):
        log_mel(np.zeros(16001, np.float32), pad_to=1.0)
    with pytest.raises(ValueError, match="wave"):
        log_mel(torch.zeros(1, 1, 10))
