# The same recipes as the Makefile, which holds the logic: `just drill` == `make drill`.
set positional-arguments

# create .venv with the pinned dependencies when missing
venv:
    make venv

# the DR drill on the default inventory (the embedded sandbox)
drill *args:
    make drill ARGS="$*"

# run the tests (with the lint gates first)
test *args:
    make test ARGS="$*"

# ruff, yamllint and ansible-lint (production profile, offline)
lint:
    make lint

# bring the embedded sandbox up on 127.0.0.1
sandbox-up *args:
    make sandbox-up ARGS="$*"

# stop the sandbox (PURGE=1 just sandbox-down also deletes its state)
sandbox-down *args:
    make sandbox-down ARGS="$*"

# print the sandbox's connection settings as KEY=VALUE lines
sandbox-env:
    @make -s sandbox-env
