"""The error every `sop` subcommand raises for a user mistake; sop_ros.cli prints it.

It lives here, below sop_ros.cli, so that a command module never imports the CLI that imports it.
"""


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""
