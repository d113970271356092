#!/usr/bin/env bash
# The checks only a CUDA GPU can run, as one script for a short lease of a GPU machine (about 8 minutes on an
# H200 with the virtual environment carried over or installed by `make install`):
#   1. the CUDA-only tests (device augmentation on the GPU equals the CPU path; nvJPEG decoding equals the
#      workers' squares) -- skipped on machines without CUDA;
#   2. benchmarks/train_throughput.py --gpu --device-aug: the full `train` path, with augmentation in the
#      workers and on the device, against the bare GPU step (results/train_throughput_gpu.json).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (OUT_DIR receives the logs; default ./gpu_check_out)
set -uo pipefail
out="${1:-gpu_check_out}"
mkdir -p "$out"
py="${PY:-.venv/bin/python}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
HF_HUB_OFFLINE=1 "$py" -m pytest -q -p no:xdist -p no:cacheprovider tests/vision/test_batch_augment.py -k cuda -rs \
    2>&1 | tee "$out/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
HF_HUB_OFFLINE=1 timeout 420 "$py" benchmarks/train_throughput.py --gpu --device-aug --no-naive \
    --name train_throughput_gpu 2>&1 | tee "$out/train_throughput_gpu.log"
bench_rc=${PIPESTATUS[0]}
cp benchmarks/results/train_throughput_gpu.json "$out/" 2>/dev/null
echo "cuda tests rc=$tests_rc, benchmark rc=$bench_rc"
exit $(( tests_rc || bench_rc ))
