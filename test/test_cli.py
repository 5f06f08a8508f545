"""The `sop` CLI: every subcommand answers --help, nothing is a placeholder."""

import argparse

import pytest
from conftest import sop_cli

from sop_ros.cli import build_parser, main

pytestmark = pytest.mark.timeout(300)


def subcommand_paths(parser, prefix=()):
    """Every command path of the parser, from the root `()` down, read from argparse's own subparsers."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommand_paths(sub, prefix + (name,))


def test_every_command_path_answers_help(capsys):
    paths = list(subcommand_paths(build_parser()))
    expected = [
        (),
        ("launch",),
        ("fleet", "check"),
        ("fleet", "nodes"),
        ("demo",),
        ("learner",),
        ("certs", "init"),
        ("certs", "add-robot"),
        ("certs", "revoke"),
        ("collect",),
        ("pretrain",),
        ("dataset", "export"),
        ("dataset", "import"),
        ("eval",),
        ("experiment",),
        ("bench", "transport"),
        ("bench", "operator"),
    ]
    for path in expected:
        assert path in paths
    for path in paths:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0, path
        assert ("usage: " + " ".join(("sop", *path))) in capsys.readouterr().out, path


def test_help_runs_as_a_process():
    result = sop_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: sop" in result.stdout and "eval" in result.stdout


def test_the_console_script_runs_as_a_process():
    result = sop_cli("fleet", "check")
    assert result.returncode == 0, result.stderr
    assert "ok (2 robots" in result.stdout
