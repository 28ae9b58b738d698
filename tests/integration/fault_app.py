"""A small app run as a subprocess by the fault tests.

``python fault_app.py emit   BOOTSTRAP PREFIX LOCAL_DIR COUNT``: emit COUNT tool
events in ``wal`` mode, printing each event id once the call returned; then
sleep (the test kills it).
``python fault_app.py fork   BOOTSTRAP PREFIX LOCAL_DIR COUNT CHILDREN``: emit
from a parent and forked children at once; every process prints
``spool <dir>`` and its ids, then flushes.
``python fault_app.py pool   BOOTSTRAP PREFIX LOCAL_DIR COUNT CHILDREN DURABILITY``:
multiprocessing children (fork start method: they leave through ``os._exit``, no
shutdown runs) emit COUNT events each and print their ids; the parent just exits.
"""

from __future__ import annotations

import os
import sys
import time

import promptgov


def _governor(bootstrap: str, prefix: str, local_dir: str,
              durability: str = "wal") -> promptgov.Governor:
    return promptgov.configure(app="fault-app", bootstrap_servers=bootstrap, topic_prefix=prefix,
                               local_dir=local_dir, durability=durability,
                               producer={"request_timeout_ms": 3000})


def _emit(gov: promptgov.Governor, count: int, label: str) -> None:
    @gov.tool(name="step")
    def step(index: int, who: str) -> int:
        return index

    for i in range(count):
        step(i, label)
        sys.stdout.write(f"id {promptgov.last_event_id()}\n")
        sys.stdout.flush()


def emit(bootstrap: str, prefix: str, local_dir: str, count: str) -> None:
    gov = _governor(bootstrap, prefix, local_dir)
    _emit(gov, int(count), "emit")
    sys.stdout.write("done\n")
    sys.stdout.flush()
    time.sleep(600)  # killed by the test


def fork(bootstrap: str, prefix: str, local_dir: str, count: str, children: str) -> None:
    gov = _governor(bootstrap, prefix, local_dir)
    parent_id = gov.producer_id
    pids = []
    for n in range(int(children)):
        pid = os.fork()
        if pid == 0:  # child: promptgov re-initialised itself after the fork
            child = promptgov.get_governor()
            assert child is not None and child.producer_id != parent_id
            spool = child._publisher.spool
            sys.stdout.write(f"spool {spool.directory if spool else None}\n")
            _emit(child, int(count), f"child-{n}")
            report = child.flush(60)
            sys.stdout.write(f"flushed {report.complete}\n")
            sys.stdout.flush()
            os._exit(0 if report.complete else 1)
        pids.append(pid)
    spool = gov._publisher.spool
    sys.stdout.write(f"spool {spool.directory if spool else None}\n")
    _emit(gov, int(count), "parent")
    status = [os.waitpid(pid, 0)[1] for pid in pids]
    report = gov.flush(60)
    sys.stdout.write(f"flushed {report.complete}\nchildren {status}\n")
    sys.stdout.flush()


def _pool_child(count: int, label: str) -> None:
    gov = promptgov.get_governor()
    assert gov is not None
    _emit(gov, count, label)


def pool(bootstrap: str, prefix: str, local_dir: str, count: str, children: str,
         durability: str) -> None:
    import multiprocessing

    _governor(bootstrap, prefix, local_dir, durability)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_pool_child, args=(int(count), f"child-{n}"))
                 for n in range(int(children))]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    sys.stdout.write(f"exitcodes {[p.exitcode for p in processes]}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    {"emit": emit, "fork": fork, "pool": pool}[sys.argv[1]](*sys.argv[2:])
