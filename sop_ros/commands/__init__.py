"""Subcommands of the `sop` CLI, one module each (see sop_ros.cli)."""
