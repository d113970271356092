"""dataset_convert's builders: a folder of audio + transcripts, or a path,text CSV, become a NeMo manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.audio.convert import manifest_from_csv, manifest_from_folder
from transferkit.audio.io import write_wav
from transferkit.audio.manifest import read_manifest
from transferkit.audio.text import TextNorm
from transferkit.errors import DataError


def _clip(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.zeros(int(seconds * 16000), np.float32), 16000)
    return path


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def test_folder_with_transcript_files_and_tables(tmp_path):
    data = tmp_path / "recordings"
    _clip(data / "a.wav", 1.0)
    (data / "a.txt").write_text("Hello  there\n", encoding="utf-8")
    _clip(data / "spk1" / "b.wav", 0.5)
    _clip(data / "spk1" / "c.wav", 0.25)
    _clip(data / "spk2" / "c.wav", 0.25)
    _clip(data / "d.wav")                                      # no transcript anywhere
    _clip(data / "e.wav")
    (data / "e.txt").write_text("  \n", encoding="utf-8")      # empty transcript
    (data / "f.wav").write_bytes(b"garbage, not audio")
    (data / "f.txt").write_text("unreadable", encoding="utf-8")
    (data / "transcripts.txt").write_text(
        "spk1/b\tsecond file\n"          # 1 path without extension
        "spk2/c.wav\tthird file\n"       # 2 exact path
        "c\tambiguous stem\n"            # 3 two files have this stem
        "zzz\tno such audio\n"           # 4
        "no tab here\n"                  # 5
        "spk1/b.wav\tsecond again\n"     # 6 a second transcript for b
        "a\tshadowed by a.txt\n",         # 7 a.txt beside a.wav wins
        encoding="utf-8")
    out = tmp_path / "manifests" / "train.json"
    written, skipped = manifest_from_folder(data, out)

    rows = _rows(out)
    assert written == 3 == len(rows)
    assert {r["text"] for r in rows} == {"Hello there", "second file", "third file"}
    assert all(Path(r["audio_filepath"]).is_absolute() for r in rows)  # outside the manifest's folder
    assert next(r for r in rows if r["text"] == "Hello there")["duration"] == pytest.approx(1.0)
    problems = "\n".join(skipped)
    assert len(skipped) == 9, problems
    for expected in ("transcripts.txt:3: 2 audio files for key 'c'", "transcripts.txt:4: no audio file for key 'zzz'",
                     "transcripts.txt:5: no TAB", "transcripts.txt:6: a second transcript for spk1/b.wav",
                     "transcripts.txt:7: not used, a.txt beside a.wav is",
                     "d.wav: no transcript", "e.wav: empty transcript", "f.wav: unreadable audio",
                     "spk1/c.wav: no transcript"):
        assert expected in problems
    utterances, bad = read_manifest(out, norm=TextNorm(), max_duration=None)
    assert len(utterances) == 3 and bad == []


def test_tsv_table_and_relative_paths(tmp_path):
    _clip(tmp_path / "clips" / "one.wav")
    (tmp_path / "clips" / "labels.tsv").write_text("one\tjust one\n", encoding="utf-8")
    written, skipped = manifest_from_folder(tmp_path / "clips", tmp_path / "m.json")
    assert (written, skipped) == (1, [])
    assert _rows(tmp_path / "m.json") == [{"audio_filepath": "clips/one.wav", "duration": 0.5, "text": "just one"}]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        manifest_from_folder(tmp_path / "none", tmp_path / "m.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        manifest_from_folder(tmp_path / "empty", tmp_path / "m.json")
    _clip(tmp_path / "lonely" / "x.wav")
    with pytest.raises(DataError, match="no manifest row.*x.wav: no transcript"):
        manifest_from_folder(tmp_path / "lonely", tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_csv(tmp_path):
    _clip(tmp_path / "audio" / "a.wav", 0.75)
    (tmp_path / "audio" / "bad.wav").write_bytes(b"nope")
    absolute = _clip(tmp_path / "other" / "b.wav")
    (tmp_path / "list.csv").write_text(
        "Path,Text\n"
        "audio/a.wav,\"Hello, world\"\n"       # 2 ok (quoted comma)
        f"{absolute},absolute path\n"          # 3 ok
        "audio/missing.wav,gone\n"             # 4
        "audio/bad.wav,broken\n"               # 5
        "audio/a.wav,\n"                       # 6 empty text
        ",no path\n",                          # 7
        encoding="utf-8")
    written, skipped = manifest_from_csv(tmp_path / "list.csv", tmp_path / "out.json")
    assert written == 2
    assert _rows(tmp_path / "out.json")[0] == {"audio_filepath": "audio/a.wav", "duration": 0.75,
                                                "text": "Hello, world"}
    assert [s.split(":")[1] for s in skipped] == ["4", "5", "6", "7"]
    assert "missing.wav not found" in skipped[0] and "unreadable" in skipped[1]
    assert "empty text" in skipped[2] and "no path" in skipped[3]

    (tmp_path / "nohead.csv").write_text("file,transcript\na.wav,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="path,text"):
        manifest_from_csv(tmp_path / "nohead.csv", tmp_path / "out2.json")
