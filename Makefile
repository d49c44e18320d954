# clip2: two commands do everything on a fresh machine:
#   make demo   - the main job on built-in sample data
#   make test   - the test suite
# `make setup` creates .venv and installs every dependency (idempotent: reruns only when a
# requirements file or setup.py changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.clip2-installed
REQS   := requirements/core.txt requirements/ros.txt requirements/dev.txt
OUT    ?= outputs

export HF_HUB_OFFLINE := 1
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: setup test fuzz demo bench bench-setup clean

setup: $(STAMP)

$(STAMP): $(REQS) setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(foreach r,$(REQS),-r $(r))
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -p no:dash --timeout=600 --durations=25

# the message fuzzers with 20,000 random examples per property (the suite runs a fixed few hundred)
fuzz: setup
	CLIP2_FUZZ_PROFILE=fuzz $(PY) -m pytest -q -p no:dash --timeout=3600 -W ignore test/ros/test_fuzz_conversions.py

demo: setup
	$(PY) -m clip2_core demo --out $(OUT)/demo

bench-setup: setup
	-command -v apt-get >/dev/null && (dpkg -s libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0))
	$(PIP) install --quiet -r requirements/bench.txt

bench: bench-setup
	mkdir -p $(OUT)/bench
	$(PY) -m clip2_core bench clustering --json $(OUT)/bench/clustering.json
	$(PY) -m clip2_core bench encoder --json $(OUT)/bench/encoder.json
	$(PY) bench/training.py --json $(OUT)/bench/training.json

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache build *.egg-info
