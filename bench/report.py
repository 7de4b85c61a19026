"""What bench/run.sh's load left in its work folder, read one way.

`attack NAME` leaves vegeta's JSON report in NAME.json and the CPU ticks
its target spent in NAME.cpu (and the registry's in NAME.regcpu);
vegeta(work, NAME) reads them as one Run. The wrk cross-check leaves
wrk-TARGET.out and wrk-TARGET.cpu, which wrk(work, TARGET) reads.
"""
import json
import os
import statistics
from typing import NamedTuple

TICK = os.sysconf("SC_CLK_TCK")


class Run(NamedTuple):
    rps: float  # requests/s
    p50: float  # ms
    p99: float  # ms
    ok: float  # the share of 2xx answers
    requests: int
    cpu: float  # µs of the target's CPU per request: robust to a busy machine
    regcpu: float | None  # µs of the registry's, when counted


def vegeta(work, name):
    r = json.load(open(f"{work}/{name}.json"))
    n = max(r["requests"], 1)

    def cpu(what):
        path = f"{work}/{name}.{what}"
        return int(open(path).read()) / TICK * 1e6 / n if os.path.exists(path) else None

    lat = r["latencies"]
    return Run(r["throughput"], lat["50th"] / 1e6, lat["99th"] / 1e6, r["success"], r["requests"], cpu("cpu"), cpu("regcpu"))


def wrk(work, target):
    """wrk's requests/s, the target's µs of CPU per request, and whether every answer was 2xx."""
    out = open(f"{work}/wrk-{target}.out").read()
    n = int(out.split(" requests in ")[0].split()[-1])
    rps = float(out.split("Requests/sec:")[1].split()[0])
    return rps, int(open(f"{work}/wrk-{target}.cpu").read()) / TICK * 1e6 / max(n, 1), "Non-2xx" not in out


def median(runs, field):
    """The median of one field of runs."""
    return statistics.median(getattr(r, field) for r in runs)
