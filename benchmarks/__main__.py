"""``python -m benchmarks``: every benchmark in one run, ratios against baselines.

Writes ``benchmarks/results/<date>-<host>.json`` and ``docs/benchmarks.md``.
``--smoke`` runs tiny sizes and writes into a temporary directory instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

SIZES = {
    "full": {"hot": 20_000, "cpu": 300, "throughput": 20_000, "outage": 100_000,
             "memory": 100_000},
    "smoke": {"hot": 200, "cpu": 5, "throughput": 200, "outage": 400, "memory": 2_000},
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{total_kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"host": socket.gethostname(), "cpu": model, "cores": os.cpu_count(),
            "memory": memory, "python": platform.python_version(),
            "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, temporary output")
    parser.add_argument("--out", type=Path, help="directory for the JSON results")
    parser.add_argument("--docs", type=Path, help="markdown report path")
    parser.add_argument("--skip-peers", action="store_true",
                        help="do not measure Langfuse and LangSmith")
    args = parser.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    temp = Path(tempfile.mkdtemp(prefix="pg-bench-out-"))
    out_dir = args.out or (temp if args.smoke else ROOT / "benchmarks" / "results")
    docs = args.docs or (temp / "benchmarks.md" if args.smoke else ROOT / "docs" /
                         "benchmarks.md")

    from kafka_broker import KafkaBroker, kafka_version

    from benchmarks import hot_path, outage, publisher_cpu, stages, throughput
    from benchmarks.report import render, table

    started = time.time()
    results: dict[str, Any] = {"machine": machine(), "kafka": kafka_version(),
                               "command": "python -m benchmarks" + (" --smoke" if args.smoke
                                                                     else ""),
                               "date": dt.date.today().isoformat(), "sizes": size}
    variants = hot_path.VARIANTS[:5] if args.skip_peers or args.smoke else hot_path.VARIANTS
    print("hot path ...", flush=True)
    results["hot_path"] = hot_path.run(size["hot"], variants)
    print("publisher cpu ...", flush=True)
    results["publisher_cpu"] = publisher_cpu.run(size["cpu"])
    with KafkaBroker(Path(tempfile.mkdtemp(prefix="pg-bench-kafka-"))) as broker:
        print(f"throughput (broker {broker.bootstrap}) ...", flush=True)
        results["throughput"] = throughput.run(broker.bootstrap, size["throughput"])
        print("stages ...", flush=True)
        results["stages"] = stages.run(broker.bootstrap, size["throughput"])
        print("outage ...", flush=True)
        results["outage"] = outage.run(broker, size["outage"])
    print("memory ...", flush=True)
    results["memory"] = outage.memory_per_event(size["memory"])
    results["seconds"] = round(time.time() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{results['date']}-{results['machine']['host']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    docs.write_text(render(results))
    print(table(results))
    print(f"\nresults: {path}\nreport: {docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
