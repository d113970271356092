"""`tkit model info` on a text model: a zoo entry shows no image facts; a .ckpt or its .onnx shows the text inputs
(tokenizer, max_length), the encoder's size and, once pruned, the attention heads and FFN width of every layer."""
from __future__ import annotations

from text_helpers import TINY, tkit

TASK = "text_classification"


def info(capsys, name) -> dict[str, str]:
    capsys.readouterr()
    assert tkit("model", "info", name) == 0
    return dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)


def test_model_info_of_a_text_zoo_entry_shows_no_image_facts(capsys):
    shown = info(capsys, "minilm-l6")
    assert shown["modality"] == "text" and shown["family"] == "huggingface"
    assert not {"input_size", "mean", "std"} & set(shown)


def test_model_info_of_a_pruned_text_checkpoint_and_of_its_onnx(ticket_files, tmp_path, capsys):
    run = tmp_path / "train"
    assert tkit(TASK, "train", "-r", run, f"data.train_file={ticket_files['train']}",
                f"data.val_file={ticket_files['val']}", *TINY, "train.epochs=1", "model.max_length=64") == 0
    assert tkit(TASK, "prune", "-r", tmp_path / "prune", "-m", run / "best.ckpt", "prune.head_ratio=0.5",
                "prune.ffn_ratio=0.5") == 0
    pruned = tmp_path / "prune" / "pruned.ckpt"
    assert tkit(TASK, "export", "-r", tmp_path / "export", "-m", pruned) == 0

    trained = info(capsys, run / "best.ckpt")
    assert trained["task"] == TASK and trained["classes"] == "3 (billing, shipping, technical)"
    assert trained["input input_ids"] == "int64 [batch, length], tokenizer minilm-l6, max_length 64, lowercase false"
    assert trained["input attention_mask"] == "int64 [batch, length]"
    assert trained["head"] == "sequence (softmax)"
    assert "1 layers, hidden 32, 2 attention heads and FFN 64 per layer" in trained["encoder"]
    assert "pruned layers (heads/FFN)" not in trained and "None" not in "".join(trained.values())

    for name in (pruned, tmp_path / "export" / "model.onnx"):
        shown = info(capsys, name)
        assert shown["file"] == str(name) and shown["input input_ids"] == trained["input input_ids"]
        assert shown["pruned layers (heads/FFN)"] == "0: 1/32" and shown["pruned from"] == str(run / "best.ckpt")
        assert shown["encoder"] == trained["encoder"] + " before pruning"


def test_model_info_of_a_missing_or_foreign_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.onnx").write_text("not a model")
    for name in (tmp_path / "missing.ckpt", tmp_path / "notes.onnx"):
        assert tkit("model", "info", name) == 2
        err = capsys.readouterr().err
        assert str(name) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
