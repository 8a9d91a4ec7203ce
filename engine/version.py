"""`--version` for both commands, read from the installed package only when asked (importlib.metadata
costs ~10 ms that no other start should pay)."""

from __future__ import annotations

import argparse
import sys

DISTRIBUTION = "migrate-tui"


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class VersionAction(argparse.Action):
    """Prints '<prog> (migrate-tui) <version>' and exits 0, as rsync's and rclone's --version do."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        name = parser.prog if parser.prog == DISTRIBUTION else f"{parser.prog} ({DISTRIBUTION})"
        print(f"{name} {installed_version()}", file=sys.stdout)  # stdout, as argparse's own version action
        parser.exit(0)
