"""NeMo manifests: usable lines become Utterances, every unusable line is skipped and named with its line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.audio.manifest import Utterance, read_manifest, write_manifest
from transferkit.audio.io import write_wav
from transferkit.audio.text import TextNorm
from transferkit.errors import DataError

NORM = TextNorm()


def _clip(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.zeros(int(seconds * 16000), np.float32), 16000)
    return path


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def row(audio, duration, text) -> str:
    return json.dumps({"audio_filepath": str(audio), "duration": duration, "text": text})


@pytest.fixture()
def folder(tmp_path) -> Path:
    data = tmp_path / "data"
    _clip(data / "audio" / "a.wav", 1.0)
    _clip(data / "audio" / "b.wav", 2.0)
    _clip(tmp_path / "elsewhere" / "long.wav", 6.0)
    (data / "audio" / "broken.wav").write_bytes(b"RIFF....not really a wave file")
    return data


def test_every_bad_item_is_counted_with_its_line(folder):
    long_clip = folder.parent / "elsewhere" / "long.wav"
    manifest = _write_lines(folder / "train.json", [
        row("audio/a.wav", 1.0, "Hello, World!"),                 # 1 ok, relative
        '{"audio_filepath": "audio/a.wav", "duration": 1.0',      # 2 bad JSON
        json.dumps({"audio_filepath": "audio/a.wav", "duration": 1.0}),  # 3 missing key text
        row("audio/missing.wav", 1.0, "hi"),                      # 4 missing file
        row("audio/broken.wav", 1.0, "hi"),                       # 5 unreadable file
        row("audio/b.wav", 5.0, "hi"),                            # 6 duration disagrees with the file
        row("audio/a.wav", 1.0, " ?! "),                          # 7 empty after normalisation
        row("audio/a.wav", 1.0, "na\u00efve caf\u00e9 #1"),       # 8 characters outside the vocabulary
        row(long_clip, 6.0, "a long one"),                        # 9 longer than max_duration (absolute path)
        "",                                                       # 10 blank: not an item
        row(folder / "audio" / "b.wav", 2.1, "Second one"),       # 11 ok, absolute, within tolerance
    ])
    vocabulary = set("abcdefghijklmnopqrstuvwxyz'")
    utterances, skipped = read_manifest(manifest, norm=NORM, max_duration=5.0, vocabulary=vocabulary)

    assert [(u.line, u.text) for u in utterances] == [(1, "hello world"), (11, "second one")]
    assert utterances[0].audio == (folder / "audio" / "a.wav").resolve() and utterances[0].audio.is_absolute()
    assert utterances[1].duration == pytest.approx(2.1)
    assert len(skipped) == 8
    expected = {2: "bad JSON", 3: "missing key 'text'", 4: "not found", 5: "unreadable audio file",
                6: "disagrees with the file's 2.00 s", 7: "empty text", 8: "outside the vocabulary",
                9: "longer than max_duration=5 s"}
    for message, (line, reason) in zip(skipped, sorted(expected.items())):
        assert message.startswith(f"train.json:{line}: "), message
        assert reason in message, message
        assert message.endswith(")") and "(" in message, message  # each names its fix
    # the characters outside the vocabulary are named
    assert "'\u00e9'" in skipped[6] and "'\u00ef'" in skipped[6] and "'#'" not in skipped[6]
    assert "'1'" in skipped[6]
    assert "missing.wav" in skipped[2] and str(folder) in skipped[2]


def test_without_checks_files_are_not_opened(folder):
    manifest = _write_lines(folder / "m.json", [row("audio/missing.wav", 1.5, "fine")])
    utterances, skipped = read_manifest(manifest, norm=NORM, max_duration=None, check_audio=False)
    assert skipped == [] and utterances[0].duration == 1.5 and utterances[0].audio.name == "missing.wav"


def test_duration_absent_is_measured_and_offset_selects_a_stretch(folder):
    manifest = _write_lines(folder / "m.json", [
        json.dumps({"audio_filepath": "audio/b.wav", "text": "whole"}),
        json.dumps({"audio_filepath": "audio/b.wav", "text": "second half", "offset": 1.0, "duration": 1.0}),
        json.dumps({"audio_filepath": "audio/b.wav", "text": "past the end", "offset": 1.5, "duration": 1.5}),
        json.dumps({"audio_filepath": "audio/b.wav", "text": "bad", "duration": "2s"}),
    ])
    utterances, skipped = read_manifest(manifest, norm=NORM, max_duration=None)
    assert [(u.duration, u.offset) for u in utterances] == [(pytest.approx(2.0), 0.0), (1.0, 1.0)]
    assert [s.split(":")[1] for s in skipped] == ["3", "4"]
    assert "disagrees" in skipped[0] and "not a number" in skipped[1]


def test_whole_file_mistakes_raise(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "none.json", norm=NORM, max_duration=None)
    empty = _write_lines(tmp_path / "empty.json", ["", "  "])
    with pytest.raises(DataError, match="has no items"):
        read_manifest(empty, norm=NORM, max_duration=None)
    csv = _write_lines(tmp_path / "data.csv", ["path,text", "a.wav,hello"])
    with pytest.raises(DataError, match="not JSON lines.*dataset_convert"):
        read_manifest(csv, norm=NORM, max_duration=None)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"audio_filepath": "a.wav", "duration": 1, "text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_manifest(latin, norm=NORM, max_duration=None)


def test_all_lines_skipped_returns_empty_list(folder):
    manifest = _write_lines(folder / "m.json", [row("audio/x.wav", 1, "a"), row("audio/y.wav", 1, "b")])
    utterances, skipped = read_manifest(manifest, norm=NORM, max_duration=None)
    assert utterances == [] and len(skipped) == 2


def test_write_manifest_round_trip(folder, tmp_path):
    manifest = _write_lines(folder / "in.json", [row("audio/a.wav", 1.0, "One"),
                                                 row(tmp_path / "elsewhere" / "long.wav", 6.0, "Two")])
    utterances, _ = read_manifest(manifest, norm=NORM, max_duration=None)
    out = write_manifest(folder / "out.json", utterances)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"audio_filepath": "audio/a.wav", "duration": 1.0, "text": "one"}
    assert Path(lines[1]["audio_filepath"]).is_absolute()  # outside the manifest's folder
    again, skipped = read_manifest(out, norm=NORM, max_duration=None)
    assert skipped == [] and again == [Utterance(u.audio, u.duration, u.text, u.line) for u in utterances]
    write_manifest(folder / "dicts.json", [{"audio_filepath": "x.wav", "duration": 1, "text": "\u00e9"}])
    assert "\u00e9" in (folder / "dicts.json").read_text(encoding="utf-8")
