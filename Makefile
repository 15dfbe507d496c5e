# Every target that needs Python creates .venv first, so a fresh clone needs only
# Python 3.11, gcc and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test images bench fuzz validate clean qemu llvm

# The venv: the project (editable), then Unicorn rebuilt from its sdist with third_party/unicorn/patches
# (x86 only, cached under .venv, under a minute the first time). If that fails for any reason, the script
# prints one line and the stock wheel stays.
$(STAMP): pyproject.toml third_party/unicorn/build.py $(wildcard third_party/unicorn/patches/*.patch)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m compileall -q emulator  # bytecode now: each boot would otherwise compile ~45 ms of it
	$(BIN)/python third_party/unicorn/build.py || \
	  echo "aeth-emu: patched Unicorn not built (third_party/unicorn/build.py failed); using the stock wheel, stores are slower"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/aeth-emu boot images/kernel.elf

# The QEMU parity tests and bench's QEMU rows need qemu-system-x86_64; CI runs as root, so install it when missing.
qemu:
	@command -v qemu-system-x86_64 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends qemu-system-x86; \
	  else echo "qemu-system-x86_64 missing: install qemu-system-x86 (the parity tests need it)"; fi; }

test: $(STAMP) qemu
	$(BIN)/python -m pytest -q

images: $(STAMP)
	$(BIN)/python -m emulator.toolchain.build

# Longer random runs of the allocator property tests and the trace-file fuzzer; failures are kept, shrunk, in
# tests/fuzz-db (commit them: every later `make test` replays them first).
fuzz: $(STAMP)
	AETH_FUZZ=1 $(BIN)/python -m pytest -q tests/test_allocator_properties.py tests/test_trace_fuzz.py

bench: $(STAMP) qemu
	$(BIN)/aeth-emu bench

# The cycle model against this host CPU running the same code, with llvm-mca as a baseline.
llvm:
	@command -v llvm-mca >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends llvm; \
	  else echo "llvm-mca missing: install llvm for the baseline"; fi; }

validate: $(STAMP) llvm
	$(BIN)/aeth-emu validate

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
