"""GPU training images/s of ResNet-18 and MobileNetV2 at 224 px: FP32 vs bf16 AMP, NCHW vs channels_last.

    python benchmarks/gpu_train.py                  # needs a CUDA GPU; ~2 minutes
    python benchmarks/gpu_train.py --compile        # also torch.compile (adds ~1-2 minutes of compiling)

What this measures is the network's training step alone -- the ceiling for any training path on this GPU --
so it can be compared with published figures: timm's table results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv
(an RTX 3090, PyTorch 1.12, CUDA 11.3, AMP, NCHW, batch 512, 224 px) lists ResNet-18 training at 2,764 images/s and
MobileNetV2 (mobilenetv2_100) at 1,832. Our default batch is 256 (timm used 512). The data is a random batch resident
on the GPU (no decoding, no host-to-device copies); `train_throughput.py --gpu` measures the whole
`tkit classification train` path (JPEG files, augmentation, Lightning) on the same GPU against a hand loop.

Each configuration: torchvision's architecture (random weights: speed does not depend on them), SGD with
Nesterov momentum and weight decay, cross-entropy, batch 256; 15 untimed warm-up steps, then `--windows`
windows of `--steps` steps each, the GPU synchronised at each window's ends; images/s is the median over the
windows. bf16 runs use `torch.autocast(device_type="cuda", dtype=torch.bfloat16)` -- what Lightning's
`precision=bf16-mixed` (`train.precision=bf16-mixed` in a spec) does. Peak memory per configuration comes from
`torch.cuda.max_memory_allocated`. Results: benchmarks/results/gpu_train.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

from common import write_results

# images/s, timm results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv (AMP, NCHW, batch 512, 224 px)
TIMM_RTX3090_AMP = {"resnet18": 2764, "mobilenet_v2": 1832}


def bench(arch: str, precision: str, channels_last: bool, compile_: bool, batch: int, size: int,
          steps: int, windows: int, device: str = "cuda") -> dict:
    torch.manual_seed(0)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    net = getattr(torchvision.models, arch)(num_classes=1000).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 1000, (batch,), device=device)
    model = torch.compile(net) if compile_ else net
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(15):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(round(steps * batch / (time.perf_counter() - t0), 1))
    result = {"arch": arch, "precision": precision, "channels_last": channels_last, "compile": compile_,
              "batch": batch, "image_size": size, "images_per_s": statistics.median(rates), "windows": rates,
              "warmup_s": round(warmup_s, 2), "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
    del model, net, opt, x, y
    if cuda:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (bf16, channels_last)")
    parser.add_argument("--only-compile", action="store_true", help="measure torch.compile alone (to add to a run)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to check the script itself")
    parser.add_argument("--name", default="gpu_train", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible: this benchmark measures GPU training only", file=sys.stderr)
        sys.exit(2)
    torch.backends.cudnn.benchmark = True
    configs = [(arch, prec, cl, False) for arch in ("resnet18", "mobilenet_v2")
               for prec, cl in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))]
    if args.only_compile:
        configs = []
    if args.compile or args.only_compile:
        configs += [(arch, "bf16", True, True) for arch in ("resnet18", "mobilenet_v2")]
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"{where}, torch {torch.__version__}, batch {args.batch}, {args.size} px", flush=True)
    rows = []
    for arch, prec, cl, comp in configs:
        r = bench(arch, prec, cl, comp, args.batch, args.size, args.steps, args.windows, args.device)
        rows.append(r)
        print(f"  {arch:<12} {prec:<4} {'channels_last' if cl else 'NCHW':<13} {'compiled' if comp else 'eager':<8} "
              f"{r['images_per_s']:8.1f} images/s (windows {r['windows']}; warm-up {r['warmup_s']} s, "
              f"peak {r['peak_mem_gib']} GiB)", flush=True)
    print()
    print("| network | precision | layout | mode | images/s | peak GPU memory |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['precision']} | {'channels_last' if r['channels_last'] else 'NCHW'} | "
              f"{'torch.compile' if r['compile'] else 'eager'} | {r['images_per_s']:.0f} | {r['peak_mem_gib']} GiB |")
    path = write_results(args.name, {"settings": vars(args), "reference": {
        "timm_rtx3090_amp_nchw_batch512_images_per_s": TIMM_RTX3090_AMP}, "runs": rows})
    if args.only_compile:
        print(f"wrote {path}")
        return
    ratios = {}
    for arch in ("resnet18", "mobilenet_v2"):
        like_timm = next(r for r in rows if r["arch"] == arch and r["precision"] == "bf16" and not r["channels_last"])
        best = max((r for r in rows if r["arch"] == arch), key=lambda r: r["images_per_s"])
        ratios[f"{arch}_bf16_nchw_vs_timm_rtx3090"] = round(like_timm["images_per_s"] / TIMM_RTX3090_AMP[arch], 3)
        ratios[f"{arch}_best_vs_timm_rtx3090"] = round(best["images_per_s"] / TIMM_RTX3090_AMP[arch], 3)
        fp32 = next(r for r in rows if r["arch"] == arch and r["precision"] == "fp32" and not r["channels_last"])
        amp = next(r for r in rows if r["arch"] == arch and r["precision"] == "bf16" and r["channels_last"] and not r["compile"])
        ratios[f"{arch}_bf16_channels_last_vs_fp32_nchw"] = round(amp["images_per_s"] / fp32["images_per_s"], 3)
    for k, v in ratios.items():
        print(f"{k}: {v}")
    path = write_results(args.name, {"settings": vars(args), "reference": {
        "timm_rtx3090_amp_nchw_batch512_images_per_s": TIMM_RTX3090_AMP}, "ratios": ratios, "runs": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
