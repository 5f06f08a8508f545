"""The `sop` CLI: every subcommand answers --help, nothing is a placeholder."""
import pytest

from conftest import sop_cli
from sop_ros.cli import build_parser, main

pytestmark = pytest.mark.timeout(300)


def subcommand_paths(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from subcommand_paths(sub, prefix + (name,))


def test_every_subcommand_has_help(capsys):
    paths = list(subcommand_paths(build_parser()))
    for expected in [("launch",), ("fleet", "check"), ("demo",), ("learner",), ("certs", "init"), ("collect",), ("pretrain",), ("eval",), ("experiment",), ("bench", "transport")]:
        assert expected in paths
    for path in paths:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0, path
        assert "usage: sop " + " ".join(path) in capsys.readouterr().out


def test_the_console_script_runs_as_a_process():
    result = sop_cli("fleet", "check")
    assert result.returncode == 0, result.stderr
    assert "ok (2 robots" in result.stdout
