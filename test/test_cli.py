"""The `sop` CLI: every subcommand answers --help, nothing is a placeholder."""
import pytest

from conftest import sop_cli
from sop_ros.cli import build_parser

pytestmark = pytest.mark.timeout(300)


def subcommand_paths(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from subcommand_paths(sub, prefix + (name,))


def test_every_subcommand_has_help():
    paths = list(subcommand_paths(build_parser()))
    assert ("launch",) in paths and ("fleet", "check") in paths
    for path in paths:
        result = sop_cli(*path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "usage: sop " + " ".join(path) in result.stdout
