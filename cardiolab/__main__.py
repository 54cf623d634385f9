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

# The verbs in the order of the data flow, grouped as `--help` shows them.
GROUPS = {
    "data": ("phantom", "check", "prepare"),
    "train and sample": ("models", "train", "encode", "sample"),
    "evaluate": ("evaluate", "function", "segment", "utility", "landmarks", "reader-study"),
    "privacy and release": ("privacy", "audit", "export"),
    "reproduce and tools": ("notebooks", "report", "bench"),
}
VERBS = tuple(v for verbs in GROUPS.values() for v in verbs)


def _module(verb: str):
    return importlib.import_module(f"cardiolab.cli.{verb.replace('-', '_')}")


def verb_table() -> str:
    """The grouped verb list of `--help`: a title per group, then one line per verb (its HELP)."""
    lines = []
    for group, verbs in GROUPS.items():
        lines.append(f"{group}:")
        lines += [f"  {v:<13} {_module(v).HELP}" for v in verbs]
    return "\n".join(lines) + "\n\n`python -m cardiolab <verb> --help` for a verb's options."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cardiolab", description=__doc__.splitlines()[0],
                                     epilog=verb_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="<verb>", help="one of the verbs below")
    for verb in VERBS:
        module = _module(verb)
        p = sub.add_parser(verb, description=module.HELP)
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
