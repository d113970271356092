"""Fuzzing the spec: a few hundred seeded mutations of `tkit classification default_spec`'s output (values
swapped for other types, infinities, NaN, huge and negative numbers; keys deleted, duplicated, misspelt;
deep nesting; anchors, aliases and alias bombs; broken indentation, truncation, stray bytes) and of
command-line overrides, each through `tkit classification train` in this process. The data folders do
not exist, so a run stops at the first check past the spec. Every outcome is exit 0 or exactly one
`tkit: error:` line with exit 2: never a traceback, and the process never grows past a set memory."""
from __future__ import annotations

import random
import re
import resource
import sys
from pathlib import Path

import pytest

from transferkit import api
from transferkit.cli import main
from transferkit.spec import key_paths
from transferkit.tasks import get_task

SEED = 19
CASES = 300
MEMORY_MB = 1024  # how much the heap may grow while the mutants run (a bomb expanded would need gigabytes)

VALUES = [
    "text", "''", "null", "~", "true", "no", "3", "-1", "0", "1.5", "-0.0", ".inf", "-.inf", ".nan", ".NaN",
    "1.0e308", "-1.0e308", "1.0e309", "1e999", "99999999999999999999", "-99999999999999999999", "2147483648",
    "4294967296", "4096", "4097", "0x7fffffffffffffff", "0o777", "1_000", "9" * 5000, "-" + "9" * 4299,
    "[]", "{}", "[1, 2, 3]", "[a, b]", "{a: 1}", "[[1, 2], [3]]", "[.nan, .inf]", '"' + "x" * 10_000 + '"',
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "!!binary aGVsbG8=", "!!set {a, b}", "!!python/object:os.system",
    "!!str 3", "!!int x", "*undefined", "'quoted: colon'", "a: b: c", "[unclosed", "{unclosed", "|\n  block",
    "\"\\ud800\"", "\u00e9\u4e2d\U0001f600", "\x07bell", "- item",
]


def alias_bomb(rng: random.Random) -> str:
    """A nested list of aliases: `width ** levels` values once expanded, from thousands to hundreds of millions."""
    levels, width = rng.randint(3, 9), rng.randint(3, 9)
    parts = ["&b0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def nested(rng: random.Random) -> str:
    depth = rng.choice([3, 63, 65, 200, 5000])
    return rng.choice(["[" * depth + "]" * depth, "{a: " * depth + "1" + "}" * depth])


KEY_LINE = re.compile(r"^(?P<pad> *)(?P<key>[A-Za-z_]+):(?P<value>[^#]*?)(?P<comment>\s+#.*)?$")


def _key_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if KEY_LINE.match(line)]


def _set_value(rng, lines, value):
    i = rng.choice(_key_lines(lines))
    m = KEY_LINE.match(lines[i])
    lines[i] = f"{m['pad']}{m['key']}: {value}"


def mutate(rng: random.Random, lines: list[str]) -> str:
    """One mutation of the spec's lines, in place; returns its name (shown when a case fails)."""
    kind = rng.choice(["value", "value", "value", "delete", "duplicate", "duplicate_section", "unknown",
                       "nested", "anchor", "bomb", "bomb_unknown", "indent", "section_value", "truncate"])
    if kind == "value":
        _set_value(rng, lines, rng.choice(VALUES))
    elif kind == "delete":
        del lines[rng.randrange(len(lines))]
    elif kind == "duplicate":
        i = rng.choice(_key_lines(lines))
        lines.insert(rng.randint(i + 1, len(lines)), lines[i])
    elif kind == "duplicate_section":
        starts = [i for i, line in enumerate(lines) if KEY_LINE.match(line) and not line.startswith(" ")]
        start = rng.choice(starts)
        end = next((s for s in starts if s > start), len(lines))
        lines.extend(lines[start:end])
    elif kind == "unknown":
        i = rng.choice(_key_lines(lines))
        m = KEY_LINE.match(lines[i])
        lines.insert(i, f"{m['pad']}{m['key'][:-1] or 'x'}: 3")
    elif kind == "nested":
        _set_value(rng, lines, nested(rng))
    elif kind == "anchor":  # anchor one key's value and alias it as another's
        i, j = rng.choice(_key_lines(lines)), rng.choice(_key_lines(lines))
        m = KEY_LINE.match(lines[i])
        lines[i] = f"{m['pad']}{m['key']}: &x{m['value']}"
        m = KEY_LINE.match(lines[j])
        lines[j] = f"{m['pad']}{m['key']}: *x"
    elif kind == "bomb":
        _set_value(rng, lines, alias_bomb(rng))
    elif kind == "bomb_unknown":
        lines.append(f"lol: {alias_bomb(rng)}")
    elif kind == "indent":
        i = rng.randrange(len(lines))
        lines[i] = rng.choice(["\t", " ", "   "]) + lines[i].lstrip(" ")
    elif kind == "section_value":  # a section given as a value, or a value as a section
        starts = [i for i, line in enumerate(lines) if KEY_LINE.match(line) and not line.startswith(" ")]
        i = rng.choice(starts)
        lines[i] = lines[i].split(":")[0] + ": " + rng.choice(["3", "[]", "null", "text", "{}"])
    elif kind == "truncate":
        i = rng.randrange(len(lines))
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        del lines[i + 1:]
    return kind


def override(rng: random.Random, keys: list[str]) -> str:
    key = rng.choice(keys)
    choice = rng.random()
    if choice < 0.1:
        key = key[:-1] or "x"  # misspelt
    elif choice < 0.15:
        key = ".".join([key] * rng.choice([2, 70]))
    value = rng.choice([*VALUES, alias_bomb(rng), nested(rng), "", "a=b", "-"])
    return f"{key}={value}"


def _heap_kb() -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmData:"))
    return int(line.split()[1])


@pytest.fixture
def heap_limit():
    """Lower this process's heap limit (RLIMIT_DATA) to its current size + MEMORY_MB while the test runs, so a
    bomb that got through ends as a MemoryError in the test rather than in the machine's OOM killer."""
    heap = _heap_kb()
    if heap is None or sys.platform != "linux":
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = (heap + MEMORY_MB * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def test_mutated_specs_and_overrides_give_exit_0_or_one_error_line(tmp_path, capsys, heap_limit):
    rng = random.Random(SEED)
    missing = tmp_path / "no_such_data"
    base = api.default_spec("classification").replace("train_dir: null", f"train_dir: {missing / 'train'}")
    base = base.replace("val_dir: null", f"val_dir: {missing / 'val'}").splitlines()
    keys = key_paths(get_task("classification").spec_class)
    outcomes: dict[str, int] = {}
    for case in range(CASES):
        lines = list(base)
        kinds = [mutate(rng, lines) for _ in range(rng.choice([1, 1, 2, 3]))]
        overrides = [override(rng, keys) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        spec = tmp_path / f"spec{case}.yaml"
        data = "\n".join(lines).encode("utf-8")
        if rng.random() < 0.03:
            data += b"\xff\xfe stray bytes"
        spec.write_bytes(data)
        capsys.readouterr()
        try:
            rc = main(["classification", "train", "-e", str(spec), "-r", str(tmp_path / f"run{case}"), *overrides])
        except BaseException as e:  # noqa: BLE001 - any escape is the failure this test looks for
            pytest.fail(f"case {case} ({kinds}, overrides {[o[:80] for o in overrides]}): {type(e).__name__}: "
                        f"{str(e)[:300]}")
        out, err = capsys.readouterr()
        where = f"case {case} ({kinds}, overrides {[o[:80] for o in overrides]}), exit {rc}:\n{err[-1500:]}"
        assert rc in (0, 2), where
        assert "Traceback" not in err and "Traceback" not in out, where
        if rc == 2:
            assert len(err.strip().splitlines()) == 1 and err.startswith("tkit: error: "), where
            reason = re.sub(r"\S*spec\d+\.yaml(:\d+)*", "SPEC", err)[13:60]
            outcomes[reason] = outcomes.get(reason, 0) + 1
    # the mutants reach many different checks, not one early refusal
    assert len(outcomes) > 20, outcomes
