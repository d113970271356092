"""Hostile and broken input around the spec, and the CLI's own I/O: alias bombs, deep nesting, duplicate
keys, numbers past what the code can use, an unusable --log_file, and a standard output that cannot be
written. Each is one `tkit: error:` line and exit 2 (a closed pipe: silent, exit 141), never a
traceback, and never more memory than a small spec needs."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from crash_helpers import child_env
from rel_helpers import FAST
from transferkit.cli import main


def _spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A YAML 'billion laughs' as top-level keys: `levels` anchors, each a list of `width` aliases of the one
    before (width ** levels values once expanded)."""
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 9, width: int = 9) -> str:
    """The same bomb as one value: a flow list of the anchored lists."""
    parts = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


# -- alias bombs: a real process under a memory limit ------------------------------------------------------

BOMB_CHILD = r"""
import contextlib, io, json, resource, sys
limit = 2 << 30  # importing torch and Lightning needs about 1 GiB; a bomb expanding needs far more
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
from transferkit.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException as e:  # a MemoryError or RecursionError is what the test looks for
            rc, err = 1, io.StringIO(f"Traceback: {type(e).__name__}")
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA caps a process's heap only on Linux")
def test_alias_bombs_are_refused_in_bounded_memory(tmp_path):
    unknown = _spec(tmp_path, "train:\n  epochs: 1\n" + alias_bomb(), "unknown_key.yaml")
    known = _spec(tmp_path, f"data:\n  classes: {flow_bomb()}\n", "known_key.yaml")
    override = f"data.classes={flow_bomb()}"
    cases = [["classification", "train", "-e", str(unknown), "-r", str(tmp_path / "r1")],
             ["classification", "train", "-e", str(known), "-r", str(tmp_path / "r2")],
             ["classification", "train", "-r", str(tmp_path / "r3"), override]]
    proc = subprocess.run([sys.executable, "-c", BOMB_CHILD, json.dumps(cases)], capture_output=True, text=True,
                          env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (rc, err), where in zip(results, (str(unknown), str(known), "override 'data.classes=...'")):
        assert rc == 2 and "Traceback" not in err, err[-500:]
        assert len(err.strip().splitlines()) == 1 and err.startswith("tkit: error: ")
        assert where in err and "alias" in err and "1,000,000 values" in err
    assert not (tmp_path / "r1").exists()


def test_an_alias_bomb_is_refused_before_any_value_is_built(tmp_path):
    """The count is of values once expanded: nine levels of nine (387 million) is refused at once; the
    same shape one level short of the limit (9**6 = 531441 values) still loads."""
    from transferkit.spec import load_yaml

    from transferkit.errors import SpecError

    with pytest.raises(SpecError, match="more than 1,000,000 values through YAML aliases"):
        load_yaml(_spec(tmp_path, alias_bomb()))
    data = load_yaml(_spec(tmp_path, alias_bomb(levels=6), "small.yaml"))
    assert len(data["lol5"]) == 9 and data["lol5"][0][0][0][0][0] == ["lol"] * 9


# -- nesting and aliases -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["[" * 6000 + "]" * 6000, "{a: " * 6000 + "1" + "}" * 6000])
def test_6000_levels_of_nesting_is_refused_in_the_file_and_on_the_command_line(tmp_path, tkit, value):
    spec = _spec(tmp_path, f"train:\n  epochs: {value}\n")
    tkit("train", "-e", spec, "-r", tmp_path / "r1").assert_user_error(f"{spec}:2", "nested more than 64 levels")
    tkit("train", "-r", tmp_path / "r2", f"train.epochs={value}").assert_user_error(
        "override 'train.epochs=...'", "nested more than 64 levels")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_block_style_nesting_past_64_levels_is_refused_with_its_line(tmp_path, tkit):
    text = "".join("  " * i + f"k{i}:\n" for i in range(70)) + "  " * 70 + "leaf: 1\n"
    spec = _spec(tmp_path, text)
    tkit("train", "-e", spec, "-r", tmp_path / "r").assert_user_error(f"{spec}:64:", "nested more than 64 levels")


def test_a_chain_of_aliases_deeper_than_64_levels_is_refused(tmp_path, tkit):
    text = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100))
    spec = _spec(tmp_path, text)
    tkit("train", "-e", spec, "-r", tmp_path / "r").assert_user_error(str(spec), "nested more than 64 levels",
                                                                       "aliases")


def test_a_key_path_of_thousands_of_parts_is_refused(tmp_path, tkit):
    result = tkit("train", "-r", tmp_path / "r", "a" + ".a" * 6000 + "=1", "train.epochs=2")
    result.assert_user_error("more than 64 levels deep")


@pytest.mark.parametrize("text", ["train: &a [*a]\n", "train: &a {epochs: *a}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path, tkit, text):
    spec = _spec(tmp_path, text)
    tkit("train", "-e", spec, "-r", tmp_path / "r").assert_user_error(f"{spec}:1", "alias *a",
                                                                       "refers to the node that contains it")


# -- duplicate keys ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,key,lines", [
    ("train:\n  epochs: 1\ndata:\n  image_size: 32\ntrain:\n  epochs: 2\n", "'train'", "lines 1 and 5"),
    ("train:\n  epochs: 1\n  batch_size: 4\n  epochs: 2\n", "'train.epochs'", "lines 2 and 4"),
    ("data:\n  augmentation:\n    hue: 0.1\n    'hue': 0.2\n", "'data.augmentation.hue'", "lines 3 and 4"),
    ("train: {epochs: 1, epochs: 2}\n", "'train.epochs'", "line 1"),
])
def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path, tkit, text, key, lines):
    spec = _spec(tmp_path, text)
    tkit("train", "-e", spec, "-r", tmp_path / "r").assert_user_error(str(spec), key, lines, "twice")
    assert not (tmp_path / "r").exists()


def test_merge_keys_may_still_be_overridden_and_a_duplicate_override_key_is_refused(tmp_path, tkit):
    """`<<: *base` then the same key is YAML's way to override a merged value, not a duplicate."""
    from transferkit.spec import load_yaml

    spec = _spec(tmp_path, "common: &c {epochs: 1, batch_size: 2}\ntrain:\n  <<: *c\n  epochs: 3\n")
    assert load_yaml(spec)["train"] == {"epochs": 3, "batch_size": 2}
    tkit("train", "-r", tmp_path / "r", "train={epochs: 1, epochs: 2}").assert_user_error(
        "override 'train=...'", "'epochs'", "twice")


# -- numbers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,key,bound", [
    ("train.batch_size=99999999999999999999", "train.batch_size", "less than or equal to 2147483647"),
    ("data.image_size=99999999999999999999", "data.image_size", "less than or equal to 4096"),
    ("data.image_size=5000", "data.image_size", "less than or equal to 4096"),
    ("train.epochs=99999999999999999999", "train.epochs", "less than or equal to 2147483647"),
    ("train.num_workers=100000", "train.num_workers", "less than or equal to 256"),
    ("train.seed=-1", "train.seed", "greater than or equal to 0"),
    ("train.seed=4294967296", "train.seed", "less than or equal to 4294967295"),
    ("train.max_minutes=1e300", "train.max_minutes", "less than or equal to 1000000"),
    ("model.freeze_blocks=[0, -99999999999999999999]", "model.freeze_blocks", "greater than or equal to -2147483647"),
])
def test_numbers_past_what_the_code_can_use_are_refused_before_anything_runs(tmp_path, tkit, override, key, bound):
    tkit("train", "-r", tmp_path / "r", *FAST, override).assert_user_error(key, bound)
    assert not (tmp_path / "r").exists()


def test_an_integer_too_long_for_python_to_read_is_refused(tmp_path, tkit):
    digits = "9" * 5000  # past sys.get_int_max_str_digits()
    spec = _spec(tmp_path, f"train:\n  epochs: {digits}\n")
    tkit("train", "-e", spec, "-r", tmp_path / "r1").assert_user_error(f"{spec}:2", "5000 digits")
    tkit("train", "-r", tmp_path / "r2", f"train.epochs={digits}").assert_user_error("train.epochs", "5000 digits")


# -- --log_file ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["missing_folder", "a_folder"])
def test_an_unusable_log_file_is_one_line_and_leaves_the_folder_unlocked(tmp_path, tkit, where):
    from transferkit.engine.run import LOCK_NAME

    log = tmp_path / "nope" / "log.txt" if where == "missing_folder" else tmp_path
    run = tmp_path / "run"
    tkit("train", "-r", run, *FAST, "--log_file", log).assert_user_error("--log_file", str(log))
    assert not (run / LOCK_NAME).exists()  # the next run is not told the folder is in use


# -- standard output ------------------------------------------------------------------------------------------

class _FullDevice:
    """A stdout whose every write fails as /dev/full's does."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("argv", [["classification", "default_spec"], ["model", "list"]])
def test_a_full_stdout_is_one_line_on_stderr(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "stdout", _FullDevice())
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines() == ["tkit: error: standard output could not be written (No space left on "
                                        "device); the output is incomplete"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_default_spec_into_dev_full_and_into_a_closed_pipe(tmp_path):
    cmd = [sys.executable, "-c", "import sys; from transferkit.cli import main; sys.exit(main())",
           "classification", "default_spec"]
    env = {k: v for k, v in child_env().items() if k != "PYTHONUNBUFFERED"}  # as a shell runs it: buffered
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["tkit: error: standard output could not be written (No space left "
                                                "on device); the output is incomplete"]
    # `tkit ... default_spec | head -0`: the reader is gone before anything is written
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == ""  # 128 + SIGPIPE, as a shell reports a closed pipe
