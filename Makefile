# The two commands the README promises: `make demo` and `make test`.
# Both create or update the virtual environment in .venv first (about 4 minutes the first time).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.plait-installed
# torch 2.14.1 + torchvision 0.29.1 is the pair that imports cleanly together on this kind of
# machine (PyPI's torchvision fails beside torch 2.13.0); see docs/NOTES.md.
TORCH := torch==2.14.1 torchvision==0.29.1

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# This machine's pip.conf makes pip warn about every missing local index folder: hide those.
QUIET := 2>&1 | { grep -v "^WARNING: Location" || true; }

.PHONY: demo test test-all install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@python3 .ci/check_disk.py $(VENV) 8
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing plait and its dependencies into $(VENV) (about 4 minutes the first time)"
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) $(QUIET)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[all,test]' $(QUIET)
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plait demo

test: $(STAMP)
	PLAIT_PROGRESS=0 $(PY) -m pytest -q -m "not slow"

# everything, the scale tests with real S3 (moto), Prefect server and Dask cluster included; CI runs this
test-all: $(STAMP)
	PLAIT_PROGRESS=0 $(PY) -m pytest -q

clean:
	rm -rf plait-demo .pytest_cache
