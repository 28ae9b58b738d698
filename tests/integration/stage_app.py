"""A stage run as a subprocess by the stage fault tests (they kill it).

``python stage_app.py BOOTSTRAP PREFIX DELAY_MS``: runs the ``copy`` stage: one
derived event per source event, ``DELAY_MS`` of work per event (so transactions
last long enough to be killed in the middle); a source whose payload says
``{"poison": true}`` makes the transform raise (dead-lettered).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from promptgov.stages import Output, Source, Stage, run_stage


def copy_stage(delay_ms: float = 0.0, name: str = "copy") -> Stage:
    def transform(event: dict[str, Any], source: Source) -> list[Output]:
        payload = event.get("payload")
        if isinstance(payload, dict) and payload.get("poison"):
            raise ValueError("poisoned record")
        if isinstance(payload, dict) and payload.get("oversize"):
            return [Output("policy_decision", {"decision": "allow", "blob": "x" * 2_000_000})]
        if isinstance(payload, dict) and payload.get("bad_topic"):
            return [Output("policy_decision", {"decision": "allow"}, topic="bad topic!")]
        if delay_ms:
            time.sleep(delay_ms / 1000)
        return [Output("policy_decision", {"decision": "allow",
                                           "target_event_id": event.get("event_id")})]

    return Stage(name, "1", transform, inputs=("events",))


if __name__ == "__main__":
    bootstrap, prefix, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    stats = run_stage(copy_stage(delay), bootstrap_servers=bootstrap, topic_prefix=prefix,
                      batch_size=200,
                      consumer_options={"session_timeout_ms": 6000,
                                        "heartbeat_interval_ms": 1000})
    sys.stdout.write(f"stopped {stats}\n")
