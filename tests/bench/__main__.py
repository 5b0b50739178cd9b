"""`./start.sh bench`: ours beside raw jupyter_client and Jupyter Kernel Gateway, one run.

Every figure is measured in this run, on this machine, next to its baselines; the ratios are
what to read, since the machine is shared and noisy.
"""

from __future__ import annotations

import ast
import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from ..ssh_host import SPEC as SSH_SPEC
from ..ssh_host import SshHost
from . import servers
from .drivers import KGSession, OursSession, RawSession, Run, ours_one_shot
from .files import files_rows
from .takeover import takeover_rows
from .tracing import tracing_rows

RESULTS = Path(__file__).parent / "results" / "latest.json"
# The loop stamps the kernel's clock (the host's) before and after itself: what a run takes
# beyond the loop is what the system around the kernel adds, free of the loop's own noise.
PRINT_LOOP = "import time as _t\n_loop = [_t.time()]\nfor i in range(100000): print(i)\n_loop.append(_t.time())"
PLOT = "import pandas, matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
PRINTED = "".join(f"{i}\n" for i in range(100000))
WHOAMI = "import sys; print(sys.argv[sys.argv.index('-f') + 1])"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(coro: Any) -> float:
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start


async def wait_pool_ready(http: httpx.AsyncClient, size: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (await http.get("/health")).json()["kernels"]["ready_by_kernelspec"].get("python3", 0) < size:
        if time.monotonic() > deadline:
            raise RuntimeError("pool did not refill")
        await asyncio.sleep(0.05)


# -- rows ------------------------------------------------------------------------------


async def warm_round_trip(open_session: Any, runs: int) -> dict[str, float]:
    session = await open_session()
    try:
        for _ in range(50):
            await session.run("1+1")
        times = [await timed(session.run("1+1")) for _ in range(runs)]
    finally:
        await session.close()
    return {"p50_ms": pct(times, 0.5) * 1000, "p99_ms": pct(times, 0.99) * 1000}


async def session_to_first_result(open_session: Any, runs: int, between: Any = None) -> float:
    times = []
    for _ in range(runs):
        if between is not None:
            await between()
        start = time.perf_counter()
        session = await open_session()
        await session.run("1+1")
        times.append(time.perf_counter() - start)
        await session.close()
    return pct(times, 0.5) * 1000


async def session_to_first_plot(open_session: Any, runs: int, between: Any = None) -> float:
    """Row 7: a new session, then the first matplotlib PNG of code that imports pandas
    and pyplot. Median seconds."""
    times = []
    for _ in range(runs):
        if between is not None:
            await between()
        start = time.perf_counter()
        session = await open_session()
        try:
            run: Run = await session.run(PLOT)
        finally:
            await session.close()
        if run.first_image_at is None:
            raise RuntimeError("no image/png came back")
        times.append(run.first_image_at - start)
    return statistics.median(times)


async def print_loop(open_session: Any, settle: Any) -> dict[str, Any]:
    session = await open_session()
    try:
        await session.run("1+1")
        await settle()  # the kernel this session took is replaced before, not during, the loop
        start, sent = time.perf_counter(), time.time()
        run: Run = await session.run(PRINT_LOOP)
        elapsed, done = time.perf_counter() - start, time.time()
        began, ended = ast.literal_eval("".join((await session.run("print(repr(_loop))")).text))
    finally:
        await session.close()
    text = "".join(run.text)
    return {
        "seconds": elapsed,
        "added_ms": 1000 * ((done - sent) - (ended - began)),
        "delivered_pct": 100 * len(text) / len(PRINTED),
        "in_order": text == PRINTED,
        "frames": run.frames,
    }


async def print_loops(openers: dict[str, Any], rounds: int, settle: Any) -> dict[str, Any]:
    """Row 4, `rounds` times for each system, taking turns in a rotating order: time is the
    median; every run must deliver everything in order; frames is the most any run took."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in openers}
    names = list(openers)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            await settle()  # no pool refilling behind anyone's run
            runs[name].append(await print_loop(openers[name], settle))
    return {
        name: {
            "seconds": statistics.median(r["seconds"] for r in got),
            "rounds_seconds": [r["seconds"] for r in got],
            "added_ms": statistics.median(r["added_ms"] for r in got),
            "rounds_added_ms": [r["added_ms"] for r in got],
            "delivered_pct": min(r["delivered_pct"] for r in got),
            "in_order": all(r["in_order"] for r in got),
            "frames": max(r["frames"] for r in got),
        }
        for name, got in runs.items()
    }


async def burst(open_session: Any, sessions: int, tries: int = 1) -> dict[str, Any]:
    """Row 8: `sessions` new sessions at once, each to its first `1+1`: seconds until the
    last is answered, and how many failed. A burst with failures is run again, up to
    `tries` times in all (raw jupyter_client's: see `raw_burst`); `lost` counts the
    sessions failed in the tries before the one reported."""
    lost, attempt = 0, 1
    while True:
        elapsed, failed = await _burst_once(open_session, sessions)
        if not failed or attempt == tries:
            return {"seconds": elapsed, "failed": failed, "lost_before": lost}
        lost, attempt = lost + failed, attempt + 1


async def _burst_once(open_session: Any, sessions: int) -> tuple[float, int]:
    start = time.perf_counter()

    async def one() -> Any:
        session = await open_session()
        await session.run("1+1")
        return session

    opened = await asyncio.gather(*(one() for _ in range(sessions)), return_exceptions=True)
    elapsed = time.perf_counter() - start
    live = [s for s in opened if not isinstance(s, BaseException)]
    await asyncio.gather(*(s.close() for s in live), return_exceptions=True)
    return elapsed, len(opened) - len(live)


def raw_burst(open_raw: Any, sessions: int) -> Any:
    """Raw jupyter_client's burst, run again when a kernel lost its TCP port race.

    jupyter_client picks free ports, writes them to the connection file, and the kernel
    binds them later; twenty started at once can pick the same one, and the loser dies or
    never answers (its client then waits out its time-out). That is jupyter_client's fault,
    not the figure's: the figure is a burst that all answered. Ours uses ipc sockets.
    """
    return burst(open_raw, sessions, tries=3)


async def sustained_one_shots(http: httpx.AsyncClient, ws_url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Row 8: one-shot `POST /execute`s arriving at `rate` a second for `seconds`, as
    scripts and agents send them, whatever became of the ones before; beside two warm
    `1+1`s on the same server just before (row 1's is measured 15 minutes earlier, and this
    machine drifts more than that between the two): back to back, as row 1 times them, and
    arriving at the same `rate` on an open session. The second pays, as each one-shot does,
    what waking an idle machine costs."""
    warm = await warm_round_trip(lambda: OursSession.open(ws_url), 200)
    session = await OursSession.open(ws_url)
    try:
        await session.run("1+1")
        paced = await _paced(lambda: session.run("1+1"), rate, min(seconds, 10.0))
    finally:
        await session.close()
    await wait_pool_ready(http, 2)
    times = await _paced(lambda: ours_one_shot(http, "1+1"), rate, seconds)
    return {"p50_ms": _pct_ms(times, 0.5), "p90_ms": _pct_ms(times, 0.9), "failed": times.count(None),
            "warm_p50_ms": warm["p50_ms"], "warm_paced_p50_ms": _pct_ms(paced, 0.5)}


def _pct_ms(times: list[float | None], q: float) -> float:
    """The `q` quantile of the requests that succeeded, in ms (NaN when none did)."""
    done = [t for t in times if t is not None]
    return pct(done, q) * 1000 if done else float("nan")


async def _paced(request: Any, rate: float, seconds: float) -> list[float | None]:
    """`request()` started `rate` times a second for `seconds`, whatever became of the ones
    before: each one's seconds, None for a failure."""

    async def one() -> float | None:
        try:
            return await timed(request())
        except Exception:
            return None

    tasks = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    return list(await asyncio.gather(*tasks))


async def kernel_pss(open_session: Any, pids_of: Any, sessions: int, server: servers.Server | None = None) -> dict[str, float]:
    """Row 8: the median PSS of a kernel (its init and wrappers included) among `sessions`
    idle ones, then after each has imported pandas and pyplot; and what the host gives all
    of them when idle: with `server`, the gateway, its template and every kernel; without
    (raw jupyter_client), the kernels. MB. A forked kernel's PSS falls as more share the
    template's pages, so `sessions` is a host's worth (the issue's 50), not a handful."""
    opened = [await open_session() for _ in range(sessions)]
    try:
        for session in opened:
            await session.run("1+1")
        await asyncio.sleep(1)
        idle = [sum(servers.pss(pid) for pid in await pids_of(s)) for s in opened]
        host_idle = server.total_pss() if server else sum(idle)
        for session in opened:
            await session.run("import pandas, matplotlib.pyplot")
        await asyncio.sleep(1)
        loaded = [sum(servers.pss(pid) for pid in await pids_of(s)) for s in opened]
    finally:
        await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)
    return {"idle_mb": statistics.median(idle) / 2**20, "pandas_mb": statistics.median(loaded) / 2**20,
            "host_idle_mb": host_idle / 2**20, "sessions": sessions}


async def ours_pids(session: OursSession) -> list[int]:
    connection_file = "".join((await session.run(WHOAMI)).text).strip()
    return [p.pid for p in psutil.process_iter(["cmdline"]) if connection_file in (p.info["cmdline"] or [])]


async def raw_pids(session: RawSession) -> list[int]:
    return [session.km.provisioner.pid]


class Load:
    """One system's sessions for row 5, driven for `seconds` at a time."""

    def __init__(self, live: list[Any], failed: int, server: servers.Server | None) -> None:
        self.live = live
        self.failed = failed
        self.server = server  # None for raw jupyter_client: no gateway process
        self.rates: list[float] = []  # executes/s of each round
        self.latencies: list[float] = []
        self.executes = 0
        self.broken = 0
        self.cpu_s = 0.0

    @classmethod
    async def open(cls, open_session: Any, sessions: int, server: servers.Server | None = None) -> Load:
        opened = await asyncio.gather(*(open_session() for _ in range(sessions)), return_exceptions=True)
        live = [s for s in opened if not isinstance(s, BaseException)]
        return cls(live, len(opened) - len(live), server)

    async def round(self, seconds: float) -> None:
        cpu_before = self.server.cpu_seconds() if self.server else 0.0
        stop = time.monotonic() + seconds
        count = 0

        async def loop(session: Any) -> None:
            nonlocal count
            try:
                while time.monotonic() < stop:
                    self.latencies.append(await timed(session.run("1+1")))
                    count += 1
            except Exception:  # a session the server dropped: counted, not fatal to the run
                self.broken += 1
                self.live.remove(session)

        await asyncio.gather(*(loop(s) for s in list(self.live)))
        if self.server:
            self.cpu_s += self.server.cpu_seconds() - cpu_before
        self.executes += count
        self.rates.append(count / seconds)

    def result(self) -> dict[str, Any]:
        result = {
            "executes_per_s": statistics.median(self.rates),
            "rounds_executes_per_s": self.rates,
            "p99_ms": pct(self.latencies, 0.99) * 1000 if self.latencies else float("nan"),
            "failed_starts": self.failed,
            "sessions_lost": self.broken,
        }
        if self.server is not None:
            kernels = self.server.kernel_rss()
            result.update(
                total_pss_mb=self.server.total_pss() / 2**20,
                gateway_cpu_ms_per_execute=1000 * self.cpu_s / max(self.executes, 1),
                gateway_rss_mb=self.server.rss() / 2**20,
                kernel_rss_mb=statistics.median(kernels) / 2**20 if kernels else 0,
            )
        return result

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.live), return_exceptions=True)


async def concurrent(
    open_ours: Any, open_raw: Any, open_kg: Any, ours: servers.Server, kg: servers.Server,
    args: argparse.Namespace, settle: Any,
) -> dict[str, Any]:
    """Row 5. Ours and Kernel Gateway take turns, round after round, with both sets of
    sessions open: a noisy spell on this shared machine then hits both, and each figure is
    the median of its rounds. Raw jupyter_client, the floor and not the peer, runs one
    round on its own before: the whole benchmark must stay under ten minutes."""
    raw = await Load.open(open_raw, args.sessions)
    try:
        await raw.round(args.seconds)
    finally:
        await raw.close()
    loads = {"ours": await Load.open(open_ours, args.sessions, ours)}
    await settle()  # measure the steady state, not the pool refilling behind it
    loads["kg"] = await Load.open(open_kg, args.sessions, kg)
    try:
        for i in range(args.rounds):
            for name in ("ours", "kg") if i % 2 == 0 else ("kg", "ours"):
                await loads[name].round(args.seconds)
        results = {name: load.result() for name, load in loads.items()}
    finally:
        await asyncio.gather(*(load.close() for load in loads.values()))
    return {"ours": results["ours"], "raw": raw.result(), "kg": results["kg"]}


# -- the run ---------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ours = servers.ours(pool_size=2)
    kg = servers.kernel_gateway()
    try:
        async with httpx.AsyncClient(base_url=ours.url, timeout=120) as http, \
                httpx.AsyncClient(base_url=kg.url, timeout=120) as kg_http:
            open_ours = lambda: OursSession.open(ours.ws_url)  # noqa: E731
            open_ours_brief = lambda: OursSession.open(ours.ws_url, "brief")  # noqa: E731
            open_raw = RawSession.open
            open_kg = lambda: KGSession.open(kg_http, kg.ws_url)  # noqa: E731
            refill = lambda: wait_pool_ready(http, 2)  # noqa: E731

            step("1 warm round trip")
            results["1_warm_round_trip"] = {
                "ours": await warm_round_trip(open_ours, args.runs),
                "raw": await warm_round_trip(open_raw, args.runs),
                "kg": await warm_round_trip(open_kg, args.runs),
            }
            step("2 new session to first result")
            results["2_session_to_first_result_ms"] = {
                "ours": await session_to_first_result(open_ours, args.starts, refill),
                "raw": await session_to_first_result(open_raw, args.starts),
                "kg": await session_to_first_result(open_kg, args.starts),
            }
            step("3 one-shot")

            async def kg_one_shot() -> None:
                session = await open_kg()
                await session.run("print(1)")
                await session.close()

            # Beside each one-shot, a warm print(1) on an open session after the same wait
            # for the pool: both pay what an idle machine costs to wake, which row 1's
            # back-to-back runs never do.
            warm = await open_ours()
            await warm.run("1+1")
            ours_times, warm_times, kg_times = [], [], []
            for _ in range(args.starts):
                await refill()
                ours_times.append(await timed(ours_one_shot(http, "print(1)")))
                await refill()
                warm_times.append(await timed(warm.run("print(1)")))
                kg_times.append(await timed(kg_one_shot()))
            await warm.close()
            results["3_one_shot_p50_ms"] = {
                "ours": pct(ours_times, 0.5) * 1000,
                "ours_warm_after_wait": pct(warm_times, 0.5) * 1000,
                "raw_warm_round_trip": results["1_warm_round_trip"]["raw"]["p50_ms"],
                "kg": pct(kg_times, 0.5) * 1000,
            }
            step(f"4 print loop, {args.print_rounds} rounds each")
            results["4_print_100k"] = await print_loops(
                {"ours": open_ours, "ours_brief": open_ours_brief, "raw": open_raw, "kg": open_kg}, args.print_rounds, refill
            )
            step("7 new session to first plot")
            results["7_session_to_first_plot_s"] = {
                "ours": await session_to_first_plot(open_ours, args.plot_starts, refill),
                "raw": await session_to_first_plot(open_raw, args.plot_starts),
                "kg": await session_to_first_plot(open_kg, args.plot_starts),
            }
            step(f"11 a {args.file_mib} MiB file into a session and back, {args.file_rounds} rounds")
            results["11_files"] = await files_rows(http, open_raw, open_kg, args.file_mib, args.file_rounds)
            step("8 forked kernels: cold start, burst, sustained one-shots, memory")
            results["8_forked"] = await forked_rows(args, http, ours.ws_url, open_raw)
            step("9 a kernel on an SSH host beside a local one")
            results["9_ssh"] = await ssh_rows(args)
            step(f"10 a replica SIGKILLed: its {args.takeover_sessions} sessions answering again, {args.takeover_rounds} rounds")
            results["10_takeover"] = await takeover_rows(args.takeover_sessions, args.takeover_rounds)
            step("12 a warm execute with tracing on and off, in turns")
            results["12_tracing"] = await tracing_rows()
            step(f"5 {args.sessions} concurrent sessions, {args.rounds} rounds each")
            await refill()
            results["5_concurrent"] = await concurrent(open_ours, open_raw, open_kg, ours, kg, args, refill)
    finally:
        ours.stop()
        kg.stop()
    return results


async def forked_rows(args: argparse.Namespace, http: httpx.AsyncClient, ws_url: str, open_raw: Any) -> dict[str, Any]:
    """Row 8, issue 14's figures. An empty pool (its template up) for cold starts and the
    burst; the shipped pool for sustained one-shots, beside a gateway that exec's every
    kernel (fork_kernels off, today's launch before forking); PSS beside raw's kernels."""
    results: dict[str, Any] = {}
    empty = servers.ours(pool_size=0)
    try:
        open_empty = lambda: OursSession.open(empty.ws_url)  # noqa: E731
        await session_to_first_result(open_empty, 1)  # the template's imports, once
        results["cold_start_ms"] = {
            "ours": await session_to_first_result(open_empty, args.starts),
            "raw": await session_to_first_result(open_raw, args.starts),
        }
        results["burst_s"] = {"ours": await burst(open_empty, args.burst), "raw": await raw_burst(open_raw, args.burst)}
        results["pss_mb"] = {
            "ours": await kernel_pss(open_empty, ours_pids, args.pss_sessions, empty),
            "raw": await kernel_pss(open_raw, raw_pids, args.pss_sessions),
        }
    finally:
        empty.stop()
    await wait_pool_ready(http, 2)
    results["sustained_one_shot"] = {"ours": await sustained_one_shots(http, ws_url, args.rate, args.sustain)}
    execd = servers.ours(pool_size=2, fork_kernels="false")
    try:
        async with httpx.AsyncClient(base_url=execd.url, timeout=120) as execd_http:
            await wait_pool_ready(execd_http, 2, timeout=120)
            results["sustained_one_shot"]["execd"] = await sustained_one_shots(execd_http, execd.ws_url, args.rate, args.sustain)
    finally:
        execd.stop()
    return results


async def ssh_rows(args: argparse.Namespace) -> dict[str, Any]:
    """Row 9, issue 15's figure: warm `1+1` on a kernel that gateway-provisioners placed on
    an SSH host (sshd on 127.0.0.2, CurveZMQ on its ports), beside a local kernel of the same
    gateway, each a session of its own; and a new session's first result on each (pool of 1)."""
    kernel_python = str(Path(os.environ["GATEWAY_KERNEL_ENV"]) / "bin" / "python")
    host = SshHost(kernel_python, tools=Path(os.environ.get("GATEWAY_PYTHON", sys.executable)).parent)
    srv = None
    try:
        srv = servers.ours(
            pool_size=1, extra_env=host.gateway_env(servers.free_port()),
            kernelspec_dirs=json.dumps([str(host.specs)]), languages=json.dumps({"python": "python3", "ssh": SSH_SPEC}),
        )
        open_local = lambda: OursSession.open(srv.ws_url, language="python")  # noqa: E731
        open_ssh = lambda: OursSession.open(srv.ws_url, language="ssh")  # noqa: E731
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as http:
            refill = lambda: _pool_ready(http, {"python3": 1, SSH_SPEC: 1})  # noqa: E731
            await refill()
            return {
                "warm_p50_ms": {
                    "local": (await warm_round_trip(open_local, args.runs // 2))["p50_ms"],
                    "ssh": (await warm_round_trip(open_ssh, args.runs // 2))["p50_ms"],
                },
                "first_result_ms": {
                    "local": await session_to_first_result(open_local, args.ssh_starts, refill),
                    "ssh": await session_to_first_result(open_ssh, args.ssh_starts, refill),
                },
            }
    finally:
        if srv is not None:
            srv.stop()
        host.stop()


async def _pool_ready(http: httpx.AsyncClient, wanted: dict[str, int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = (await http.get("/health")).json()["kernels"]["ready_by_kernelspec"]
        if all(ready.get(spec, 0) >= n for spec, n in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool did not refill: {ready}")
        await asyncio.sleep(0.05)


def step(name: str) -> None:
    print(f"[bench] {name} ...", flush=True)


# -- the table -------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, Any, Any, Any]] = []
    w = r["1_warm_round_trip"]
    rows.append(("1 warm 1+1 round trip p50 (ms)", w["ours"]["p50_ms"], w["raw"]["p50_ms"], w["kg"]["p50_ms"]))
    rows.append(("1 warm 1+1 round trip p99 (ms)", w["ours"]["p99_ms"], w["raw"]["p99_ms"], w["kg"]["p99_ms"]))
    s = r["2_session_to_first_result_ms"]
    rows.append(("2 new session -> first result p50 (ms)", s["ours"], s["raw"], s["kg"]))
    o = r["3_one_shot_p50_ms"]
    rows.append(("3 one-shot print(1) p50 (ms) [raw: row 1 p50]", o["ours"], o["raw_warm_round_trip"], o["kg"]))
    rows.append(("3 ... ours warm print(1) after the same wait", o["ours_warm_after_wait"], None, None))
    p = r["4_print_100k"]
    rows.append(("4 print 100k: time to result (s)", p["ours"]["seconds"], p["raw"]["seconds"], p["kg"]["seconds"]))
    rows.append(("4 ... with a brief result (s)", p["ours_brief"]["seconds"], p["raw"]["seconds"], p["kg"]["seconds"]))
    rows.append(("4 ... time around the kernel's own loop (ms)", p["ours"]["added_ms"], p["raw"]["added_ms"], p["kg"]["added_ms"]))
    rows.append(("4 ... with a brief result (ms)", p["ours_brief"]["added_ms"], p["raw"]["added_ms"], p["kg"]["added_ms"]))
    rows.append(("4 print 100k: bytes delivered (%)", p["ours"]["delivered_pct"], p["raw"]["delivered_pct"], p["kg"]["delivered_pct"]))
    rows.append(("4 print 100k: in order", p["ours"]["in_order"], p["raw"]["in_order"], p["kg"]["in_order"]))
    rows.append(("4 print 100k: frames received", p["ours"]["frames"], p["raw"]["frames"], p["kg"]["frames"]))
    c = r["5_concurrent"]
    rows.append(("5 concurrent: executes/s", c["ours"]["executes_per_s"], c["raw"]["executes_per_s"], c["kg"]["executes_per_s"]))
    rows.append(("5 concurrent: gateway CPU per execute (ms)", c["ours"]["gateway_cpu_ms_per_execute"], None, c["kg"]["gateway_cpu_ms_per_execute"]))
    rows.append(("5 concurrent: p99 latency (ms)", c["ours"]["p99_ms"], c["raw"]["p99_ms"], c["kg"]["p99_ms"]))
    rows.append(("5 concurrent: failed starts", c["ours"]["failed_starts"], c["raw"]["failed_starts"], c["kg"]["failed_starts"]))
    rows.append(("5 concurrent: sessions lost mid-run", c["ours"]["sessions_lost"], c["raw"]["sessions_lost"], c["kg"]["sessions_lost"]))
    rows.append(("6 gateway RSS, sessions open (MB)", c["ours"]["gateway_rss_mb"], None, c["kg"]["gateway_rss_mb"]))
    rows.append(("6 kernel RSS, median (MB)", c["ours"]["kernel_rss_mb"], None, c["kg"]["kernel_rss_mb"]))
    f = r["7_session_to_first_plot_s"]
    rows.append(("7 new session -> first pandas+pyplot PNG (s)", f["ours"], f["raw"], f["kg"]))
    if "8_forked" in r:
        k = r["8_forked"]
        rows.append(("8 cold start, empty pool -> first 1+1 (ms)", k["cold_start_ms"]["ours"], k["cold_start_ms"]["raw"], None))
        b = k["burst_s"]
        rows.append(("8 burst of new sessions, all answered (s)", b["ours"]["seconds"], b["raw"]["seconds"], None))
        rows.append(("8 ... failed", b["ours"]["failed"], b["raw"]["failed"], None))
        rows.append(("8 ... failed in bursts run again before it", b["ours"]["lost_before"], b["raw"]["lost_before"], None))
        one = k["sustained_one_shot"]
        rows.append(("8 one-shots at a steady rate p50 (ms) [raw: row 1]", one["ours"]["p50_ms"], w["raw"]["p50_ms"], None))
        rows.append(("8 ... our warm 1+1 p50 just before (ms)", one["ours"]["warm_p50_ms"], None, None))
        rows.append(("8 ... and arriving at the same rate (ms)", one["ours"]["warm_paced_p50_ms"], None, None))
        rows.append(("8 ... with every kernel exec'd (fork_kernels off)", one["execd"]["p50_ms"], w["raw"]["p50_ms"], None))
        rows.append(("8 ... failed (forked, exec'd)", one["ours"]["failed"], one["execd"]["failed"], None))
        m = k["pss_mb"]
        rows.append(("8 PSS of an idle kernel (MB)", m["ours"]["idle_mb"], m["raw"]["idle_mb"], None))
        rows.append(("8 PSS after import pandas, pyplot (MB)", m["ours"]["pandas_mb"], m["raw"]["pandas_mb"], None))
        if "host_idle_mb" in m["ours"]:
            rows.append((f"8 host memory, {m['ours']['sessions']} idle sessions (MB) [raw: kernels]", m["ours"]["host_idle_mb"], m["raw"]["host_idle_mb"], None))
        rows.append(("8 PSS of gateway + all kernels, row 5's sessions (MB)", c["ours"]["total_pss_mb"], None, c["kg"]["total_pss_mb"]))
    if "9_ssh" in r:
        h = r["9_ssh"]
        rows.append(("9 warm 1+1 p50, kernel on an SSH host (ms)", h["warm_p50_ms"]["ssh"], w["raw"]["p50_ms"], None))
        rows.append(("9 ... a local kernel, same gateway (ms)", h["warm_p50_ms"]["local"], w["raw"]["p50_ms"], None))
        rows.append(("9 new session -> first result, SSH host (ms)", h["first_result_ms"]["ssh"], None, None))
        rows.append(("9 ... local (ms)", h["first_result_ms"]["local"], None, None))
    if "10_takeover" in r:
        t = r["10_takeover"]
        rows.append(("10 replica SIGKILL -> its sessions answer, p50 (ms)", t["answered_ms"]["p50"], None, None))
        rows.append(("10 ... slowest of its sessions (ms)", t["answered_ms"]["max"], None, None))
        rows.append(("10 ... vs a new SSH session (state lost) (ms)", t["new_session_ms"], None, None))
        rows.append(("10 warm 1+1 p50, store on (ms) [raw: store off]", t["warm_p50_ms"]["store_on"], t["warm_p50_ms"]["store_off"], None))
    if "11_files" in r:
        f = r["11_files"]
        mib = f["mib"]
        rows.append((f"11 a {mib} MiB file in, p50 (s) [raw, kg: by code]", f["ours"]["upload_s"], f["raw"]["upload_s"], f["kg"]["upload_s"]))
        rows.append(("11 ... and out, p50 (s)", f["ours"]["download_s"], f["raw"]["download_s"], f["kg"]["download_s"]))
        rows.append(("11 ... bytes out delivered (%)", 100.0, f["raw"]["download_delivered_pct"], f["kg"]["download_delivered_pct"]))
    if "12_tracing" in r:
        t = r["12_tracing"]
        rows.append(("12 warm 1+1 p50, tracing on (ms) [raw: off]", t["tracing_on"], t["tracing_off"], None))
    head = f"| {'measure':48} | {'ours':>9} | {'raw jc':>9} | {'kernel gw':>9} | {'ours/raw':>8} | {'ours/kg':>8} |"
    lines = [head, "|" + "|".join("-" * (len(c) ) for c in head.split("|")[1:-1]) + "|"]
    for name, ours, raw, kg in rows:
        lines.append(f"| {name:48} | {_fmt(ours):>9} | {_fmt(raw):>9} | {_fmt(kg):>9} | {_ratio(ours, raw):>8} | {_ratio(ours, kg):>8} |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return str(v)
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def cli() -> None:
    parser = argparse.ArgumentParser(prog="./start.sh bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="round trips in row 1")
    parser.add_argument("--starts", type=int, default=20, help="new sessions in rows 2 and 3")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent sessions in row 5")
    parser.add_argument("--seconds", type=float, default=10, help="duration of each round of row 5")
    parser.add_argument("--plot-starts", type=int, default=5, help="new sessions in row 7, per system")
    parser.add_argument("--print-rounds", type=int, default=3, help="rounds of row 4 per system")
    parser.add_argument("--burst", type=int, default=20, help="new sessions at once in row 8")
    parser.add_argument("--rate", type=float, default=3, help="one-shots per second in row 8")
    parser.add_argument("--sustain", type=float, default=30, help="seconds of one-shots in row 8")
    parser.add_argument("--pss-sessions", type=int, default=50, help="kernels whose memory row 8 measures, per system")
    parser.add_argument("--ssh-starts", type=int, default=10, help="new sessions in row 9, per kind of kernel")
    parser.add_argument("--takeover-sessions", type=int, default=5, help="sessions on the replica row 10 kills")
    parser.add_argument("--takeover-rounds", type=int, default=3, help="replicas row 10 kills, one after the other")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of row 5 for ours and Kernel Gateway")
    parser.add_argument("--file-mib", type=int, default=4, help="size of row 11's file (under 7: Kernel Gateway's message limit)")
    parser.add_argument("--file-rounds", type=int, default=5, help="round trips of row 11's file, per system")
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(main(args))
    results["bench_seconds"] = time.monotonic() - started
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(table(results))
    p = results["4_print_100k"]
    rounds = ", ".join(f"{o / r:.2f}x" for o, r in zip(p["ours"]["rounds_seconds"], p["raw"]["rounds_seconds"]))
    print(f"\nrow 4, ours/raw time round by round: {rounds}")
    rounds = ", ".join(f"{o / r:.2f}x" for o, r in zip(p["ours_brief"]["rounds_seconds"], p["raw"]["rounds_seconds"]))
    print(f"row 4 with a brief result, ours/raw time round by round: {rounds}")
    added = {name: ", ".join(f"{ms:.1f}" for ms in p[name]["rounds_added_ms"]) for name in ("ours", "ours_brief", "raw")}
    print(f"row 4, ms around the kernel's own loop round by round: ours {added['ours']}; brief {added['ours_brief']}; raw {added['raw']}")
    o = results["3_one_shot_p50_ms"]
    print(f"row 3, one-shot / our warm print(1) after the same wait: {o['ours'] / o['ours_warm_after_wait']:.2f}x")
    c = results["5_concurrent"]
    rounds = ", ".join(f"{o / k:.2f}x" for o, k in zip(c["ours"]["rounds_executes_per_s"], c["kg"]["rounds_executes_per_s"]))
    print(f"row 5, ours/kernel gw executes/s round by round: {rounds}")
    if "8_forked" in results:
        k = results["8_forked"]
        raw_warm = results["1_warm_round_trip"]["raw"]["p50_ms"]
        ours_warm = results["1_warm_round_trip"]["ours"]["p50_ms"]
        print(f"row 8, cold start ours/raw: {k['cold_start_ms']['ours'] / k['cold_start_ms']['raw']:.3f}x (target 0.15x)")
        print(f"row 8, burst ours/raw: {k['burst_s']['ours']['seconds'] / k['burst_s']['raw']['seconds']:.3f}x (target 0.25x)")
        one = k["sustained_one_shot"]
        print(f"row 8, steady one-shots p50 / our warm 1+1 p50 just before: {one['ours']['p50_ms'] / one['ours']['warm_p50_ms']:.2f}x "
              f"(target 2x); / a warm 1+1 at the same rate: {one['ours']['p50_ms'] / one['ours']['warm_paced_p50_ms']:.2f}x; "
              f"/ row 1's ours: {one['ours']['p50_ms'] / ours_warm:.2f}x, raw's: {one['ours']['p50_ms'] / raw_warm:.2f}x; "
              f"exec'd: {one['execd']['p50_ms'] / one['execd']['warm_p50_ms']:.1f}x")
        plot = results["7_session_to_first_plot_s"]
        print(f"row 7, first pandas+pyplot PNG ours/raw: {plot['ours'] / plot['raw']:.3f}x (target 0.1x)")
        m = k["pss_mb"]
        print(f"row 8, PSS ours/raw idle: {m['ours']['idle_mb'] / m['raw']['idle_mb']:.2f}x (target 0.6x), "
              f"after pandas+pyplot: {m['ours']['pandas_mb'] / m['raw']['pandas_mb']:.2f}x (target 0.3x)")
    print(f"\n(whole run {results['bench_seconds']:.0f} s; JSON in {RESULTS})")


if __name__ == "__main__":
    cli()
