"""`openflare run | check-config | explain | version` (also `python -m openflare`)."""

from __future__ import annotations

import argparse
import os
import sys

from openflare import __version__, explain_cli
from openflare.config.loader import DEFAULT_CONFIG_PATH, ConfigBundle, ConfigError, load_bundle

EXIT_CONFIG_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openflare", description="OpenFlare edge proxy")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the proxy (public and admin listeners)")
    run.add_argument(
        "--config",
        default=None,
        help=f"main config file (default: $OPENFLARE_CONFIG or {DEFAULT_CONFIG_PATH})",
    )
    check = commands.add_parser("check-config", help="validate a config bundle and exit")
    check.add_argument("file", nargs="?", default=None)
    commands.add_parser("version", help="print the version")
    explain_cli.add_parser(commands)
    return parser


def _load_or_report(path: str | None) -> ConfigBundle | None:
    try:
        return load_bundle(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"openflare {__version__}")
        return 0
    if args.command == "explain":
        return explain_cli.run(args)
    bundle = _load_or_report(args.file if args.command == "check-config" else args.config)
    if bundle is None:
        return EXIT_CONFIG_ERROR
    if args.command == "check-config":
        print(bundle.summary())
        return 0
    import uvloop

    from openflare.server import serve

    try:
        uvloop.run(serve(bundle, os.environ))
    except OSError as exc:
        print(f"openflare: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
