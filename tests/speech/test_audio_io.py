"""Audio files: every format libsndfile reads comes back as mono float32 at the rate asked for."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audio_helpers import peak_hz, sine
from transferkit.audio.io import audio_duration, load_audio, resample, write_wav
from transferkit.errors import DataError


@pytest.mark.parametrize("ext, fmt, subtype", [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"),
                                                ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")])
def test_formats_read_as_mono_float32(tmp_path, ext, fmt, subtype):
    wave = sine(440, 1.0, 16000)
    path = tmp_path / f"tone.{ext}"
    sf.write(str(path), wave, 16000, format=fmt, subtype=subtype)
    got = load_audio(path, 16000)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - 16000) <= 1152  # lossy codecs may pad by a frame
    assert abs(peak_hz(got, 16000) - 440) < 2
    assert np.max(np.abs(got)) <= 1.0
    assert audio_duration(path) == pytest.approx(len(got) / 16000, abs=0.08)


def test_stereo_is_averaged(tmp_path):
    left = sine(300, 0.5, 8000)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, np.zeros_like(left)], axis=1), 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 8000), left / 2, atol=1e-6)


def test_resampling_22050_to_16000_keeps_frequency_and_length(tmp_path):
    wave = sine(1000, 2.0, 22050)
    path = tmp_path / "espeak_rate.wav"
    sf.write(str(path), wave, 22050, subtype="PCM_16")
    got = load_audio(path, 16000)
    assert len(got) == 32000
    assert abs(peak_hz(got, 16000) - 1000) < 1
    assert abs(peak_hz(resample(wave, 22050, 16000), 16000) - 1000) < 1
    # the level survives too (no gain change from the filter)
    assert np.sqrt(np.mean(got[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_offset_and_duration_read_a_stretch(tmp_path):
    path = tmp_path / "ramp.wav"
    wave = np.linspace(-0.9, 0.9, 8000).astype(np.float32)
    write_wav(path, wave, 8000)
    part = load_audio(path, 8000, offset=0.25, duration=0.5)
    np.testing.assert_allclose(part, wave[2000:6000], atol=1e-4)
    assert len(load_audio(path, 16000, offset=0.5)) == 8000
    assert len(load_audio(path, 8000, offset=2.0)) == 0  # past the end: nothing, not an error


def test_duration_comes_from_the_header(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, np.zeros(12345, np.float32), 16000)
    assert audio_duration(path) == pytest.approx(12345 / 16000)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.wav does not exist"):
        load_audio(tmp_path / "nope.wav", 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    for read in (lambda: load_audio(garbage, 16000), lambda: audio_duration(garbage)):
        with pytest.raises(DataError, match="garbage.wav") as info:
            read()
        assert "\n" not in str(info.value)


def test_write_wav_is_atomic_16bit_and_clipped(tmp_path):
    path = tmp_path / "out.wav"
    wave = np.array([0.0, 0.5, -0.5, 2.0, -3.0], np.float32)
    write_wav(path, wave, 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
    assert sf.info(str(path)).subtype == "PCM_16"
    np.testing.assert_allclose(load_audio(path, 16000), [0, 0.5, -0.5, 1, -1], atol=1e-4)
