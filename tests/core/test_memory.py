import json
import os
import subprocess
import sys

import pytest

# Allocates and frees a 64 MB buffer 20 times (after 10 untimed), touching every page; reports the minor page faults.
PROBE = """
import json, resource, sys
import torch
from transferkit.engine.memory import tune_allocator
applied = tune_allocator()
for _ in range(10):  # warm-up: the heap grows to its working size (faults in either case)
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = torch.ones(16 << 20)  # (numpy asks for huge pages for big arrays; torch, like a training step, does not)
    del a
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(setting: str) -> dict:
    env = {**os.environ, "TKIT_MALLOC_TUNING": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    tuned, default = probe("1"), probe("0")
    assert tuned["applied"] is True and default["applied"] is False
    # 20 x 64 MB = 20 x 16,384 pages: glibc's default mmap/munmap faults every page in every time
    assert default["faults"] > 20 * 16_000
    assert tuned["faults"] < 3 * 16_384  # the heap settles within a few allocations, then nothing faults
