"""`/metrics`: what an operator graphs and alerts on, in Prometheus' text format
(prometheus-client). Label sets stay bounded: surfaces, statuses, kernelspecs, reasons from a
fixed list; never a session id, a token name or a path.

Counters and histograms are updated where their events happen (executions in
`executions.py`, kernel starts and deaths through `LaunchOptions.on_started`, replays in
`ws.py`, refusals in `access.py`); the gauges (sessions, kernels, sockets) are read from the
running parts at each scrape.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from kernels.events import Finished
from kernels.kernel import Kernel

if TYPE_CHECKING:
    from .runtime import Runtime

SURFACES = ("ws", "rest", "rest_session")
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_STARTS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.executions = Counter("icotes_executions", "executions, by surface and how they ended", ["surface", "status"], registry=r)
        self.duration = Histogram("icotes_execution_duration_seconds", "submission to end of each execution", ["surface"], buckets=_SECONDS, registry=r)
        self.queue_wait = Histogram("icotes_execution_queue_wait_seconds", "submission to the kernel being asked to run it (queue, and a one-shot's kernel)", ["surface"], buckets=_SECONDS, registry=r)
        self.output_bytes = Counter("icotes_output_bytes", "output bytes executions sent", ["surface"], registry=r)
        self.dropped_bytes = Counter("icotes_dropped_output_bytes", "output bytes the output limit dropped", ["surface"], registry=r)
        self.timeouts = Counter("icotes_execution_timeouts", "executions that ran into their time-out", ["surface"], registry=r)
        self.kernel_start = Histogram("icotes_kernel_start_seconds", "launch to ready, each kernel", ["kernelspec"], buckets=_STARTS, registry=r)
        self.kernel_deaths = Counter("icotes_kernel_deaths", "kernel processes that ended unasked, by reason", ["kernelspec", "reason"], registry=r)
        self.replays = Counter("icotes_replays", "reconnects that asked for the frames they missed", registry=r)
        self.replayed_frames = Counter("icotes_replayed_frames", "frames sent again to reconnecting clients", registry=r)
        self.lost_frames = Counter("icotes_lost_frames", "frames reconnecting clients asked for that the log no longer held", registry=r)
        self.auth_failures = Counter("icotes_auth_failures", "requests refused at the door", ["reason"], registry=r)

    def watch(self, runtime: Runtime) -> None:
        self.registry.register(_Live(runtime))

    def executed(self, surface: str, status: str, seconds: float, finished: Finished | None, submitted: float) -> None:
        self.executions.labels(surface, status).inc()
        self.duration.labels(surface).observe(seconds)
        if status == "timeout":
            self.timeouts.labels(surface).inc()
        if finished is not None:
            self.output_bytes.labels(surface).inc(finished.output_bytes)
            self.dropped_bytes.labels(surface).inc(finished.dropped_bytes)
            if finished.ran_from is not None:
                self.queue_wait.labels(surface).observe(max(0.0, finished.ran_from - submitted))

    def kernel_started(self, kernel: Kernel, seconds: float) -> None:
        self.kernel_start.labels(kernel.spec_name).observe(seconds)
        kernel.on_death.append(lambda: self.kernel_deaths.labels(kernel.spec_name, death_kind(kernel.exit_reason)).inc())

    def replayed(self, frames: int, lost: tuple[int, int] | None) -> None:
        self.replays.inc()
        self.replayed_frames.inc(frames)
        if lost is not None:
            self.lost_frames.inc(lost[1] - lost[0] + 1)


def death_kind(reason: str | None) -> str:
    """A kernel's exit reason (free text) as one of a few label values."""
    text = (reason or "").lower()
    if "memory" in text:
        return "out_of_memory"
    if "killed by" in text:
        return "signal"
    if "exited with code" in text:
        return "exit"
    return "ended"


class _Live(Collector):
    """The gauges, read from the running parts when scraped."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("icotes_sessions", "live sessions, by state and kernelspec", labels=["state", "kernelspec"])
        for (state, spec), n in Tally((c.session.state.value, c.session.spec_name) for c in self.rt.sessions).items():
            sessions.add_metric([state, spec], n)
        yield sessions
        stats = self.rt.pool.stats()
        pool = GaugeMetricFamily("icotes_pool_kernels", "the warm pool's kernels, by state and kernelspec", labels=["state", "kernelspec"])
        for state in ("ready", "starting"):
            for spec, n in stats[f"{state}_by_kernelspec"].items():
                pool.add_metric([state, spec], n)
        yield pool
        yield GaugeMetricFamily("icotes_kernels_in_use", "kernels handed out (sessions' and one-shots')", value=stats["in_use"])
        yield GaugeMetricFamily("icotes_websockets_open", "/ws sockets open", value=self.rt.connections)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
