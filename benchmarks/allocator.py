"""What transferkit's glibc malloc setting (transferkit/engine/memory.py) does to a training step.

    python benchmarks/allocator.py            # ~1.5 min: MobileNetV2, 224 px, batch 32, 2 rounds
    python benchmarks/allocator.py --size 128

Each measurement is a fresh Python process (the setting is process-wide and cannot be undone): it applies
`tune_allocator()` or not (TKIT_MALLOC_TUNING=0), trains torchvision's MobileNetV2 (channels_last, SGD) on one
random batch for 3 untimed and 8 timed steps, and reports images/s, minor page faults per step, kernel (system)
CPU seconds per step and peak resident memory, read from getrusage. The two settings alternate, round after
round. Results: benchmarks/results/allocator.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from common import write_results

CHILD = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F, torchvision
from transferkit.engine.memory import tune_allocator
applied = tune_allocator()
size, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = torchvision.models.mobilenet_v2(num_classes=10).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
def step():
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(3):
    step()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print("RESULT " + json.dumps({"applied": applied, "images_per_s": round(batch * steps / (t1 - t0), 2),
      "minor_faults_per_step": round((r1.ru_minflt - r0.ru_minflt) / steps),
      "system_s_per_step": round((r1.ru_stime - r0.ru_stime) / steps, 4),
      "user_s_per_step": round((r1.ru_utime - r0.ru_utime) / steps, 4), "max_rss_mb": round(r1.ru_maxrss / 1024)}))
"""


def run(setting: str, size: int, batch: int, steps: int) -> dict:
    env = {**os.environ, "TKIT_MALLOC_TUNING": "1" if setting == "tuned" else "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(batch), str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for r in range(args.rounds):
        for setting in (("default", "tuned") if r % 2 == 0 else ("tuned", "default")):
            res = run(setting, args.size, args.batch, args.steps)
            runs[setting].append(res)
            print(f"  round {r + 1} {setting:<8} {res['images_per_s']:6.1f} images/s, {res['minor_faults_per_step']:>7} "
                  f"minor faults/step, {res['system_s_per_step']:.3f} s kernel + {res['user_s_per_step']:.3f} s user "
                  f"CPU/step, peak RSS {res['max_rss_mb']} MB", flush=True)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("images_per_s", "minor_faults_per_step",
                                                                "system_s_per_step", "max_rss_mb")}
           for s, rs in runs.items()}
    ratio = round(med["tuned"]["images_per_s"] / med["default"]["images_per_s"], 3)
    print(f"\nMobileNetV2 {args.size} px, batch {args.batch}: glibc defaults {med['default']['images_per_s']:.1f} "
          f"images/s ({med['default']['minor_faults_per_step']:.0f} faults/step), tuned {med['tuned']['images_per_s']:.1f} "
          f"({med['tuned']['minor_faults_per_step']:.0f}); peak RSS {med['default']['max_rss_mb']:.0f} -> "
          f"{med['tuned']['max_rss_mb']:.0f} MB")
    path = write_results("allocator", {"settings": vars(args), "medians": med, "speedup": ratio, "runs": runs})
    print(f"wrote {path}\nspeedup: {ratio}")


if __name__ == "__main__":
    main()
