"""`tkit data demo speech`: espeak-ng utterances, val voices unseen in train, manifests that read clean."""
from __future__ import annotations

import json

import pytest
import soundfile as sf

from audio_helpers import have_espeak
from transferkit.audio.manifest import read_manifest
from transferkit.audio.text import TextNorm
from transferkit.data import speech_demo
from transferkit.data.demo import build_demo
from transferkit.errors import DataError

pytestmark = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech_demo")
    summary = build_demo("speech", out / "a", train=4, val=3, long=2)
    return out, summary


def test_layout_manifests_and_voices(built):
    out, summary = built
    root = out / "a"
    assert summary["counts"] == {"train": 4, "val": 3}
    assert not set(summary["voices"]["train"]) & set(summary["voices"]["val"])
    assert set(summary["voices"]["long"]) <= set(speech_demo.VAL_VOICES)
    for split, count in (("train", 4), ("val", 3)):
        utterances, skipped = read_manifest(root / f"{split}.json", norm=TextNorm(), max_duration=20.0,
                                            vocabulary=set("abcdefghijklmnopqrstuvwxyz'"), duration_tolerance=0.01)
        assert skipped == [] and len(utterances) == count
        for utt in utterances:
            info = sf.info(str(utt.audio))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert 1.0 < utt.duration < 8.0
        raw = [json.loads(line) for line in (root / f"{split}.json").read_text().splitlines()]
        assert all(r["audio_filepath"].startswith(f"{split}/") for r in raw)  # relative to the manifest
    train_texts = {json.loads(line)["text"] for line in (root / "train.json").read_text().splitlines()}
    val_texts = {json.loads(line)["text"] for line in (root / "val.json").read_text().splitlines()}
    assert not train_texts & val_texts
    assert any(p in " ".join(train_texts | val_texts) for p in speech_demo.PRODUCTS)
    long_info = sf.info(str(root / "long.wav"))
    assert long_info.samplerate == 16000 and long_info.duration > 3.0
    srt = (root / "long_reference.srt").read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:00,") and "\n2\n" in srt
    assert len((root / "long.txt").read_text().split()) > 6


def test_vad_finds_the_long_recordings_utterances(built):
    from transferkit.audio.io import load_audio
    from transferkit.audio.subtitles import read_srt
    from transferkit.audio.vad import SpeechSegmenter

    out, _ = built
    reference = read_srt(out / "a" / "long_reference.srt")
    found = SpeechSegmenter().segments(load_audio(out / "a" / "long.wav", 16000), 16000)
    assert len(found) == len(reference) == 2
    for (start, end), (true_start, true_end, _) in zip(found, reference):
        assert abs(start - true_start) < 0.3 and abs(end - true_end) < 0.3, (found, reference)


def test_same_options_give_the_same_bytes(built):
    out, _ = built
    build_demo("speech", out / "b", train=4, val=3, long=2)
    files = sorted(p.relative_to(out / "a") for p in (out / "a").rglob("*") if p.is_file())
    assert len(files) == 4 + 3 + 2 + 3 + 1  # wavs, manifests, long.{wav,txt,srt}, demo.json
    for name in files:
        assert (out / "a" / name).read_bytes() == (out / "b" / name).read_bytes(), name


def test_val_does_not_change_with_the_training_count(built, tmp_path):
    out, _ = built
    build_demo("speech", tmp_path, train=1, val=3, long=1)
    assert (tmp_path / "val.json").read_bytes() == (out / "a" / "val.json").read_bytes()


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(speech_demo.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install -y espeak-ng"):
        build_demo("speech", tmp_path / "x", train=1, val=1, long=1)
    assert not any((tmp_path / "x").rglob("*.wav"))
