"""The ``promptgov`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

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

    stage = commands.add_parser("stage", help="run a downstream stage (exactly once)")
    stage_commands = stage.add_subparsers(dest="stage_command", required=True)
    run = stage_commands.add_parser("run", help="run one copy of a stage until SIGTERM")
    run.add_argument("stage", help="a built-in stage (policy, redact) or module:attribute "
                     "naming a Stage or a function returning one")
    _kafka_arguments(run)
    run.add_argument("--batch-size", type=int, default=500)
    run.add_argument("--no-create-topics", action="store_true",
                     help="do not create the input, output and dead-letter topics")
    stage_commands.add_parser("list", help="the built-in stages")

    lag = commands.add_parser("lag", help="freshness per stage: records and time behind, "
                              "latencies")
    _kafka_arguments(lag)
    lag.add_argument("--stage", action="append", dest="stages",
                     help="a stage name (repeatable; default: every stage of the prefix)")
    lag.add_argument("--sample", type=int, default=500,
                     help="latest outputs per partition used for the latencies")
    lag.add_argument("--json", action="store_true", help="print JSON")
    lag.add_argument("--timeout", type=float, default=60.0,
                     help="seconds before giving up on an unresponsive cluster")

    schema = commands.add_parser("schema", help="JSON Schemas of the event kinds")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    export = schema_commands.add_parser("export", help="write one JSON Schema per event kind")
    export.add_argument("directory", type=Path)
    return parser


def _kafka_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", default=os.environ.get(
        "PROMPTGOV_BOOTSTRAP_SERVERS"), help="host:port[,...] (default: "
        "$PROMPTGOV_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-prefix", default=os.environ.get("PROMPTGOV_TOPIC_PREFIX",
                                                                 "promptgov"))


def _load_stage(spec: str) -> Any:
    from promptgov.stages import BUILTIN, Stage

    if spec in BUILTIN:
        return BUILTIN[spec]()
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"{spec!r} is not a built-in stage ({', '.join(BUILTIN)}) nor "
                         "module:attribute")
    import importlib

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as python -m does: modules of the current directory
    target = getattr(importlib.import_module(module_name), attribute)
    found = target if isinstance(target, Stage) or not callable(target) else target()
    if not isinstance(found, Stage):
        raise ValueError(f"{spec} is not a promptgov.stages.Stage nor a function returning one")
    return found


def _stage_command(args: argparse.Namespace) -> int:
    from promptgov.stages import BUILTIN

    if args.stage_command == "list":
        for name, factory in BUILTIN.items():
            built = factory()
            print(f"{name:<10} {built.version:<24} {built.description}")
        return 0
    if not args.bootstrap_servers:
        print("promptgov stage run: --bootstrap-servers (or PROMPTGOV_BOOTSTRAP_SERVERS) is "
              "required", file=sys.stderr)
        return 2
    try:
        chosen = _load_stage(args.stage)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"promptgov stage run: {exc}", file=sys.stderr)
        return 2
    import logging

    from promptgov.stages import run_stage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        stats = run_stage(chosen, bootstrap_servers=args.bootstrap_servers,
                          topic_prefix=args.topic_prefix, batch_size=args.batch_size,
                          create_topics=not args.no_create_topics)
    except Exception as exc:
        print(f"promptgov stage run: could not run against {args.bootstrap_servers}: "
              f"{_describe(exc)}", file=sys.stderr)
        return 2
    print(f"promptgov stage {chosen.name}@{chosen.version} stopped: {stats}")
    return 0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _lag_command(args: argparse.Namespace) -> int:
    if not args.bootstrap_servers:
        print("promptgov lag: --bootstrap-servers (or PROMPTGOV_BOOTSTRAP_SERVERS) is required",
              file=sys.stderr)
        return 2
    import asyncio
    import json
    import logging

    from promptgov.stages.lag import format_lag, stage_lag

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        lags = asyncio.run(asyncio.wait_for(stage_lag(
            args.bootstrap_servers, topic_prefix=args.topic_prefix, stages=args.stages,
            sample=args.sample), args.timeout))
    except Exception as exc:
        print(f"promptgov lag: could not read {args.bootstrap_servers}: {_describe(exc)}",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([lag.as_dict() for lag in lags], indent=2))
    else:
        print(format_lag(lags) or f"no stages under the prefix {args.topic_prefix!r}")
    return 0


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
    if args.command == "stage":
        return _stage_command(args)
    if args.command == "lag":
        return _lag_command(args)
    if args.command == "schema":
        from promptgov.events.schema import export_schemas

        for path in export_schemas(args.directory):
            print(path)
        return 0
    return 2
