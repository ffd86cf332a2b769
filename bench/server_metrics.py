"""What the dev server reports of its work (its Prometheus metrics) and its CPU time: two
readings, before and after a run, give what the run cost it."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import psutil

# The requests of the frontend that a run's cost table shows, by the name it gives them.
REQUESTS = {
    "StartWorkflowExecution": "starts",
    "SignalWorkflowExecution": "signals",
    "UpdateWorkflowExecution": "updates",
    "QueryWorkflow": "queries",
    "DescribeWorkflowExecution": "describes",
    "RespondWorkflowTaskCompleted": "workflow tasks",
}
_REQUEST = re.compile(r"^service_requests\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.MULTILINE)
_STORE = re.compile(r"^persistence_requests\{[^}]*\} (?P<value>[0-9.e+]+)$", re.MULTILINE)


class ServerCosts:
    """What the dev server has done so far: its CPU time (the process listening for the metrics
    port), its frontend's requests in the default namespace by operation, and, whatever the
    machine's speed, what its work is made of: all requests among its services and from clients
    ("server requests") and the reads and writes of its store ("store requests")."""

    def __init__(self, metrics_port: int) -> None:
        self._url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.process = next(
            p
            for p in psutil.Process().children(recursive=True)
            if p.name() == "temporal" and str(metrics_port) in p.cmdline()
        )

    async def reading(self) -> dict[str, float]:
        await asyncio.sleep(1.5)  # the server publishes its counters about every second
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(self._url, timeout=10).read().decode())
        counts: dict[str, float] = dict.fromkeys([*REQUESTS.values(), "server requests"], 0.0)
        for match in _REQUEST.finditer(text):
            counts["server requests"] += float(match["value"])
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            name = REQUESTS.get(labels.get("operation", ""))
            if name and labels.get("service_name") == "frontend" and labels.get("namespace") == "default":
                counts[name] += float(match["value"])
        counts["store requests"] = sum(float(m["value"]) for m in _STORE.finditer(text))
        cpu = self.process.cpu_times()
        return {**counts, "server CPU ms": (cpu.user + cpu.system) * 1000}
