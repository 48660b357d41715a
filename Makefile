# qchain developer commands. `make test` and `make devnet` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest test-sweeps devnet devnet-down bench clean rust-client sim-sweep sim-mutants sim-reconf sim-engine

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check qchain consensus contracts node devnet deploy tests
	$(VENV)/bin/ruff format --check qchain consensus contracts node devnet deploy tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest

test: lint typecheck pytest

# The long part of the sweeps and soaks `make test` runs a smoke of: the tests marked
# `sweep` (README, Testing), which `make test` leaves out. The fault kit's other hostile-peer
# and key-manager scenarios on fresh devnets (about 20-60 s each), three of its validator-set
# scenarios (2-3 minutes each), minority-partition
# through the fault kit's Docker backend, and the engine simulator's seeds 8..27 of S1-S22.
test-sweeps: $(STAMP)
	$(VENV)/bin/pytest -m sweep

DEVNET_DIR ?= devnet-data

devnet: $(STAMP)
	$(VENV)/bin/qchain devnet init --dir $(DEVNET_DIR) --validators 4
	$(VENV)/bin/qchain devnet up --dir $(DEVNET_DIR) --foreground

devnet-down: $(STAMP)
	$(VENV)/bin/qchain devnet down --dir $(DEVNET_DIR)

# The Rust client (clients/rust/README.md).
CARGO_TARGET_DIR ?= $(CURDIR)/.cache/cargo-target

rust-client:
	cd clients/rust && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) cargo build --release --locked
	@echo "built $(CARGO_TARGET_DIR)/release/qchain-anchor"

# The whole-network simulator's nightly sweep (docs/SIMULATION.md): seeded runs of four
# validators, 20 virtual seconds each, with faults; a failing seed prints its replay
# command. About 1,000 runs an hour on a quiet 2-core machine (a third of the CPU goes to
# the bursts), a few hundred beside other work.
# Then the same on a chain whose set changes (`--reconf`: a validator added, then one
# of the genesis removed, beside the faults); such a run costs several times as much.
# The runs go to one worker process per core (SIM_JOBS).
SIM_SEEDS ?= 0..499
SIM_RECONF_SEEDS ?= 0..99
SIM_JOBS ?= 0

sim-sweep: $(STAMP)
	$(VENV)/bin/qchain sim net --seeds $(SIM_SEEDS) --seconds 20 --jobs $(SIM_JOBS)
	$(VENV)/bin/qchain sim net --seeds $(SIM_RECONF_SEEDS) --seconds 20 --reconf --jobs $(SIM_JOBS)

# The consensus simulator's fixed-set scenarios S1-S22 (CONSENSUS.md §8, consensus/README.md)
# over seeds 0..1999 at n = 4 and 0..499 at n = 7, one process per size (about 13 minutes
# on a quiet 2-core machine); consensus/README.md records the last result. `make test`
# runs seeds 0..7 of each, `make test-sweeps` 8..27.
ENGINE_SEEDS_4 ?= 0..1999
ENGINE_SEEDS_7 ?= 0..499

sim-engine: $(STAMP)
	$(VENV)/bin/qchain sim run --scenario all --seeds $(ENGINE_SEEDS_4) --validators 4 & four=$$!; \
	$(VENV)/bin/qchain sim run --scenario all --seeds $(ENGINE_SEEDS_7) --validators 7; seven=$$?; \
	wait $$four && exit $$seven

# The consensus simulator's validator-set changes (CONSENSUS.md §10.8, consensus/README.md):
# scenarios C1-C8 over seeds 0..1999 at n = 4 -> 5 -> 4 and 7 -> 8 -> 7, then the
# early-activation mutant, which must be caught. About 25 minutes at n = 4 and two hours
# at n = 7 on a quiet 2-core machine; consensus/README.md records the last result.
RECONF_SEEDS ?= 0..1999

sim-reconf: $(STAMP)
	$(VENV)/bin/qchain sim run --scenario reconf --seeds $(RECONF_SEEDS) --validators 4
	$(VENV)/bin/qchain sim run --scenario reconf --seeds $(RECONF_SEEDS) --validators 7
	@echo "mutant early-activation (C1, seeds 0..19): must report violations"
	@$(VENV)/bin/qchain sim run --scenario C1 --seeds 0..19 --validators 4 --mutant early-activation | sed -n 1p

# Each mutant (the first-wave bugs put back, and the disk model's no-sync) over 20 seeds:
# prints per mutant how many seeds found it ("20 runs, K failed"); docs/SIMULATION.md
# records the last result.
sim-mutants: $(STAMP)
	@for m in no-resync no-recover empty-spin subscriber-drop forward-drop no-sync; do \
		echo "mutant $$m"; \
		$(VENV)/bin/qchain sim net --seeds 0..19 --mutant $$m --jobs $(SIM_JOBS) | tail -1; \
	done
	@echo "mutant gap-stall (--client eager)"
	@$(VENV)/bin/qchain sim net --seeds 0..19 --client eager --mutant gap-stall --jobs $(SIM_JOBS) | tail -1
	@echo "mutant early-activation (--reconf, 6 s)"
	@$(VENV)/bin/qchain sim net --seeds 0..19 --seconds 6 --reconf --mutant early-activation --jobs $(SIM_JOBS) | tail -1

# The standard benchmark set (docs/BENCHMARKS.md); each run starts its own devnet on free
# loopback ports. About 20 minutes on 2 cores: run it on a quiet machine. Each scheme at
# half its saturation rate, near saturation and 1.5 times it (the overload row).
BENCH_OUT ?= bench-out
QB := $(VENV)/bin/qchain bench --duration 30

bench: $(STAMP)
	$(QB) --scheme ed25519 --rates 1300,2600,3900 --profile-leader 10 --out $(BENCH_OUT)/ed25519-n4
	$(QB) --scheme ml-dsa-65 --rates 700,1400,2100 --out $(BENCH_OUT)/ml-dsa-65-n4
	$(QB) --scheme ed25519 --rates 2000,2500 --baseline --out $(BENCH_OUT)/ed25519-n4-baseline
	$(QB) --scheme ed25519 --rate 1000 --faults 1 --out $(BENCH_OUT)/ed25519-n4-1-crashed
	$(QB) --idle-only --heartbeat-ms 0 --idle 15 --out $(BENCH_OUT)/idle-no-heartbeat
	$(QB) --scheme ed25519 --validators 7 --rates 1000,1500 --out $(BENCH_OUT)/ed25519-n7
	$(QB) --scheme ed25519 --validators 10 --rates 600,1000 --out $(BENCH_OUT)/ed25519-n10
	$(QB) --scheme ed25519 --validators 16 --rates 200,400 --out $(BENCH_OUT)/ed25519-n16

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
