"""The ``promptgov`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promptgov._version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptgov", description="Prompt-event governance "
                                     "on Kafka.")
    parser.add_argument("--version", action="version", version=f"promptgov {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a scripted copilot and print its events")
    demo.add_argument("--bootstrap-servers", help="publish to this Kafka cluster "
                      "(default: the embedded local directory)")
    demo.add_argument("--local-dir", help="directory for the embedded sink "
                      "(default: a new temporary directory)")

    schema = commands.add_parser("schema", help="JSON Schemas of the event kinds")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    export = schema_commands.add_parser("export", help="write one JSON Schema per event kind")
    export.add_argument("directory", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and ``python -m promptgov``."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        import logging

        from promptgov import demo

        # The client library's retry chatter (a new topic's leader, metadata) is not news here.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        from promptgov.errors import ConfigurationError

        try:
            return demo.run(args.bootstrap_servers, args.local_dir, sys.stdout)
        except ConfigurationError as exc:
            print(f"promptgov demo: {exc}", file=sys.stderr)
            return 2
    if args.command == "schema":
        from promptgov.events.schema import export_schemas

        for path in export_schemas(args.directory):
            print(path)
        return 0
    return 2
