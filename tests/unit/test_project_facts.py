"""What onboarding reads from a checkout (plugins/module_utils/project.py), on a layout like
Weltgewebe's today: compose file under infra/compose without name:, make up without -p or
--env-file, pins in toolchain.versions.yml, .node-version and package.json."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "collections"))
from ansible_collections.weltgewebe.ops.plugins.module_utils import project


@pytest.fixture()
def checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    (tmp_path / "infra" / "compose").mkdir(parents=True)
    (tmp_path / "infra" / "compose" / "compose.core.yml").write_text("services:\n  api:\n    image: x\n")
    (tmp_path / "toolchain.versions.yml").write_text(
        '---\nrust: "1.89.0"\npython: "3.12"\nuv: "0.9.11"  # the uv pin\ncargo-deny: "0.18.8"\n'
    )
    (tmp_path / ".node-version").write_text("20.19.0\n")
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", "packageManager": "pnpm@9.11.0+sha512.abc"}))
    (tmp_path / "Cargo.toml").write_text('[workspace.package]\nedition = "2021"\nrust-version = "1.85"\n')
    (tmp_path / "Justfile").write_text(
        "# the stack\nup:        # dev stack up\n\tmake up\n\ncheck:\n\tcargo fmt --all -- --check\n"
    )
    (tmp_path / "Makefile").write_text(
        "up:\n\tGIT_COMMIT_SHA=x docker compose -f infra/compose/compose.core.yml --profile dev up -d --build\n\n"
        "down:\n\tdocker compose -f infra/compose/compose.core.yml down -v\n"
    )
    return tmp_path


def test_versions_come_from_the_repositorys_files(checkout):
    versions = project.read_versions(str(checkout), {"rust": "1.80.0", "node": "18", "yq": "4"})
    assert versions["rust"] == {"version": "1.89.0", "source": "toolchain.versions.yml"}
    assert versions["cargo_deny"] == {"version": "0.18.8", "source": "toolchain.versions.yml"}
    assert versions["uv"]["version"] == "0.9.11"
    assert versions["node"] == {"version": "20.19.0", "source": ".node-version"}
    assert versions["pnpm"] == {"version": "9.11.0", "source": "package.json packageManager"}
    assert versions["rust_min"] == {"version": "1.85", "source": "Cargo.toml rust-version"}
    assert versions["yq"] == {"version": "4", "source": "default"}, "not pinned: the default, said so"


def test_recipes_are_read_from_justfile_and_makefile(checkout):
    assert project.recipe(str(checkout / "Justfile"), "up") == ["make up"]
    assert project.recipe(str(checkout / "Makefile"), "up")[0].endswith("--profile dev up -d --build")
    assert project.recipe(str(checkout / "Makefile"), "nope") == []


def test_a_makefile_recipe_reads_as_a_shell_runs_it(checkout):
    """make's escaped ``$$`` is the shell's ``$``; a make variable is expanded, ``$$(...)`` is not."""
    (checkout / "Makefile").write_text(
        "COMPOSE := docker compose -f infra/compose/compose.core.yml\n"
        'up:\n\tGIT_COMMIT_SHA="$$(git rev-parse HEAD)" $(COMPOSE) --profile dev up -d --build\n'
    )
    assert project.recipe(str(checkout / "Makefile"), "up") == [
        'GIT_COMMIT_SHA="$(git rev-parse HEAD)" docker compose -f infra/compose/compose.core.yml '
        "--profile dev up -d --build"
    ]
    # a Justfile has no such escape: its text is the shell's
    (checkout / "Justfile").write_text("up:\n\techo $$ $HOME\n")
    assert project.recipe(str(checkout / "Justfile"), "up") == ["echo $$ $HOME"]


def test_the_compose_project_follows_composes_rules(checkout):
    up = project.recipe(str(checkout / "Makefile"), "up")
    facts = project.compose_project(str(checkout), "infra/compose/compose.core.yml", None, up)
    # no name:, no -p, no COMPOSE_PROJECT_NAME: the compose file's directory names the project
    assert facts["project_name"] == "compose"
    assert facts["env_file_read"] == str(checkout / "infra" / "compose" / ".env")
    assert facts["root_env_reaches_stack"] is False
    assert "--env-file .env" in facts["root_env_why"] and "ln -s ../../.env infra/compose/.env" in facts["root_env_why"]
    # docker compose config's answer wins over the rules
    named = project.compose_project(str(checkout), "infra/compose/compose.core.yml", {"name": "welt"}, up)
    assert (named["project_name"], named["project_name_source"]) == ("welt", "docker compose config")


@pytest.mark.parametrize(
    ("compose_text", "up", "env_line", "expected"),
    [
        ("name: Weltgewebe_Dev\nservices: {}\n", "", "", "weltgewebe_dev"),
        ("services: {}\n", "docker compose -p wg-local up -d", "", "wg-local"),
        ("services: {}\n", "", "COMPOSE_PROJECT_NAME=from-env-file\n", "from-env-file"),
    ],
)
def test_a_project_name_given_anywhere_compose_looks_is_found(checkout, compose_text, up, env_line, expected):
    (checkout / "infra" / "compose" / "compose.core.yml").write_text(compose_text)
    if env_line:
        (checkout / "infra" / "compose" / ".env").write_text(env_line)
    facts = project.compose_project(str(checkout), "infra/compose/compose.core.yml", None, [up] if up else [])
    assert facts["project_name"] == expected


def test_the_root_env_reaches_the_stack_with_env_file_or_a_root_compose_file(checkout):
    up = ["docker compose --env-file .env -f infra/compose/compose.core.yml up -d"]
    assert project.compose_project(str(checkout), "infra/compose/compose.core.yml", None, up)["root_env_reaches_stack"]
    (checkout / "compose.yml").write_text("services: {}\n")
    at_root = project.compose_project(str(checkout), "compose.yml", None, [])
    assert at_root["root_env_reaches_stack"] and at_root["project_name"] == checkout.name.lower().replace(".", "")


def test_make_variables_in_the_up_recipe_are_expanded(checkout):
    (checkout / "Makefile").write_text(
        "COMPOSE := docker compose --env-file .env -f infra/compose/compose.core.yml\nup:\n\t$(COMPOSE) up -d\n"
    )
    up = project.recipe(str(checkout / "Makefile"), "up")
    assert up == ["docker compose --env-file .env -f infra/compose/compose.core.yml up -d"]
    assert project.compose_project(str(checkout), "infra/compose/compose.core.yml", None, up)["root_env_reaches_stack"]
