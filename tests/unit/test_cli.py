"""The command line's help: every command listed once, in its runbook group; --version; exit codes."""

from __future__ import annotations

import argparse

import pytest

from weltgewebe_ops import __version__, cli


def test_every_command_is_in_exactly_one_group_of_the_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    grouped = [name for names in cli.GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(commands), "a command missing from wgops --help, or listed twice"
    text = parser.format_help()
    assert all(f"    {name} " in text for name in commands) and "exit codes:" in text


def test_version_and_the_hot_paths_exit_codes_are_said(capsys):
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"wgops {__version__}"
    for command, code in (("wal-push", "3 other bytes"), ("wal-fetch", "126 abort recovery")):
        sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        assert code in sub.choices[command].format_help().replace("\n", " ").replace("  ", " ")
