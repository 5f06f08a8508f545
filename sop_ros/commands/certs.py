"""`sop certs`: fleet credentials (CA, learner TLS certificate, robot certificates and bearer tokens).

sop certs init --out creds --robots robot1,robot2 [--learner-host 10.0.0.5]
sop certs add-robot robot3 --dir creds
sop certs revoke robot2 --dir creds      # the learner refuses robot2's token and certificate on its next call
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sop_ros.commands.errors import CliError

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="create and revoke fleet credentials (TLS certificates, tokens)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="certs_action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create a CA, the learner certificate, robot certificates and tokens")
    init.add_argument("--out", type=Path, required=True, help="output directory (must not hold a CA yet)")
    init.add_argument("--robots", required=True, help="comma-separated robot ids")
    init.add_argument(
        "--learner-host",
        action="append",
        default=[],
        help="extra host name or IP for the learner certificate (repeatable); "
        "localhost and 127.0.0.1 are always included",
    )
    init.add_argument(
        "--operators", default="operator", help="comma-separated operator names to issue tokens for (default: operator)"
    )
    add = actions.add_parser("add-robot", help="issue a certificate and token for one more robot")
    add.add_argument("robot")
    add.add_argument("--dir", type=Path, required=True, help="credentials directory from `sop certs init`")
    revoke = actions.add_parser(
        "revoke", help="revoke every token of a robot (or operator) and, with --dir, its client certificate"
    )
    revoke.add_argument("robot")
    revoke.add_argument("--dir", type=Path, help="credentials directory (DIR/tokens.json and DIR/revoked_certs.json)")
    revoke.add_argument("--tokens-file", type=Path, help="the learner's tokens file, instead of --dir")
    parser.set_defaults(func=run)


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError(f"--{what}: give at least one name")
    return names


def run(args: argparse.Namespace) -> int:
    from sop_ros.link import auth, certs

    try:
        if args.certs_action == "init":
            layout = certs.init_credentials(
                args.out, _names(args.robots, "robots"), args.learner_host, _names(args.operators, "operators")
            )
            _LOGGER.info(
                "credentials written to %s (keep ca.key offline; give each robot only robots/<id>/)", layout.root
            )
        elif args.certs_action == "add-robot":
            layout = certs.add_robot(args.dir, args.robot)
            _LOGGER.info("issued %s", layout.robot_dir(args.robot))
        else:
            if bool(args.dir) == bool(args.tokens_file):
                raise CliError("give exactly one of --dir or --tokens-file")
            if args.tokens_file:
                tokens, certificate = auth.revoke(args.tokens_file, args.robot), False
            else:
                tokens, certificate = certs.revoke_robot(args.dir, args.robot)
            if not tokens and not certificate:
                raise CliError(f"nothing to revoke for {args.robot!r}: no active token or certificate")
            _LOGGER.info(
                "revoked %d token(s)%s of %s", tokens, " and the client certificate" if certificate else "", args.robot
            )
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return 0
