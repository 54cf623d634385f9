"""`python -m cardiolab <verb>`: one sub-command per verb, each a thin call into the library.

A verb lives in `cardiolab/cli/<verb>.py` (a dash in the verb is an underscore in the module name) with HELP, add_arguments(parser) and run(args) -> exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cardiolab.cli import resolve_profile
from cardiolab.core import CardiolabError

VERBS = ("phantom", "check", "prepare", "function", "train", "models", "encode", "sample", "evaluate",
         "utility", "report", "notebooks", "bench", "privacy", "audit", "export", "reader-study", "segment",
         "landmarks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cardiolab", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="<verb>")
    for verb in VERBS:
        module = importlib.import_module(f"cardiolab.cli.{verb.replace('-', '_')}")
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        if hasattr(args, "set"):       # the verb takes --profile and --set: resolved here, once (cli.add_profile)
            args.profile = resolve_profile(args)
        return int(args._run(args) or 0)
    except CardiolabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
