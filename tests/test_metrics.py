"""`/metrics` read with prometheus-client's own parser, against a real server: each counter
moves by exactly what was done on every surface, the gauges follow the running parts, and no
label carries an id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from .conftest import GatewayServer, connect, result_of

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OUTPUT_LIMIT = 2000
_LABELS = {
    "surface": {"ws", "rest", "rest_session"},
    "status": {"ok", "error", "timeout", "interrupted", "died", "cancelled", "abandoned"},
    "reason": {"token", "host", "origin", "out_of_memory", "signal", "exit", "ended"},
    "state": {"idle", "busy", "restarting", "closed", "ready", "starting"},
}


@pytest.fixture(scope="module")
def metrics_server() -> Iterator[GatewayServer]:
    srv = GatewayServer(
        pool_size=1, session_grace_s=30, token=TOKEN, output_limit=OUTPUT_LIMIT, session_log_frames=5,
        kernel_uid_base=75000,
    )
    yield srv
    assert not srv.stop()


def scrape(server: GatewayServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_executions_are_counted_on_every_surface(metrics_server: GatewayServer) -> None:
    before = scrape(metrics_server)
    async with httpx.AsyncClient(base_url=metrics_server.url, headers=AUTH, timeout=60) as http:
        one_shot = (await http.post("/execute", json={"code": "print('x' * 5000)"})).json()
        assert one_shot["status"] == "ok"  # past the output limit: cut, and counted as dropped
        timed_out = (await http.post("/execute", json={"code": "import time; time.sleep(30)", "timeout": 1})).json()
        assert timed_out["status"] == "timeout"
        session_id = (await http.post("/sessions")).json()["id"]
        error = (await http.post(f"/sessions/{session_id}/execute", json={"code": "1/0"})).json()
        assert error["status"] == "error"
        await http.delete(f"/sessions/{session_id}")
    async with connect(metrics_server, additional_headers=AUTH) as ws:
        assert result_of(await ws.run("print('hi')"))["status"] == "ok"
        await ws.send({"type": "close_session"})
    after = scrape(metrics_server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("icotes_executions_total", surface="rest", status="ok") == 1
    assert moved("icotes_executions_total", surface="rest", status="timeout") == 1
    assert moved("icotes_execution_timeouts_total", surface="rest") == 1
    assert moved("icotes_executions_total", surface="rest_session", status="error") == 1
    assert moved("icotes_executions_total", surface="ws", status="ok") == 1
    assert moved("icotes_execution_duration_seconds_count", surface="rest") == 2
    assert moved("icotes_execution_duration_seconds_sum", surface="rest") >= 1  # the time-out's second
    assert moved("icotes_execution_queue_wait_seconds_count", surface="ws") == 1
    assert moved("icotes_dropped_output_bytes_total", surface="rest") == 5001 - OUTPUT_LIMIT
    assert moved("icotes_output_bytes_total", surface="ws") == len("hi\n")
    assert value(after, "icotes_kernel_start_seconds_count", kernelspec="python3") >= 1


async def test_kernel_deaths_replays_and_lost_frames(metrics_server: GatewayServer) -> None:
    before = scrape(metrics_server)
    async with connect(metrics_server, additional_headers=AUTH) as ws:
        session_id = ws.session["session_id"]
        assert result_of(await ws.run("import os; os._exit(3)"))["status"] == "died"
        await ws.until(lambda f: f["type"] == "status" and f["execution_state"] == "idle")
        # Ten outputs in ten frames or more: the log keeps only five of them.
        await ws.run("import time\nfor i in range(10):\n    print(i, flush=True); time.sleep(0.05)", "p")
    url = f"{metrics_server.ws_url}/ws?session_id={session_id}&last_seq=0"
    async with websockets.connect(url, additional_headers=AUTH, open_timeout=30) as again:
        first = json.loads(await asyncio.wait_for(again.recv(), 30))
        assert first["type"] == "session" and first["lost"] is not None
        await again.send(json.dumps({"type": "close_session"}))
    after = scrape(metrics_server)
    assert value(after, "icotes_kernel_deaths_total", kernelspec="python3", reason="exit") - \
        value(before, "icotes_kernel_deaths_total", kernelspec="python3", reason="exit") == 1
    assert value(after, "icotes_replays_total") - value(before, "icotes_replays_total") == 1
    assert value(after, "icotes_replayed_frames_total") - value(before, "icotes_replayed_frames_total") == first["replayed"]
    lost = first["lost"]["to_seq"] - first["lost"]["from_seq"] + 1
    assert value(after, "icotes_lost_frames_total") - value(before, "icotes_lost_frames_total") == lost > 0


async def test_refusals_are_counted_and_metrics_need_the_token(metrics_server: GatewayServer) -> None:
    before = scrape(metrics_server)
    assert httpx.get(f"{metrics_server.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{metrics_server.url}/sessions", headers={"Host": "rebound.example"}, timeout=10).status_code == 403
    bad_origin = {**AUTH, "Origin": "https://evil.example"}
    assert httpx.post(f"{metrics_server.url}/sessions", headers=bad_origin, timeout=10).status_code == 403
    after = scrape(metrics_server)
    for reason in ("token", "host", "origin"):
        assert value(after, "icotes_auth_failures_total", reason=reason) - value(before, "icotes_auth_failures_total", reason=reason) == 1


async def test_gauges_follow_the_running_parts_and_labels_stay_bounded(metrics_server: GatewayServer) -> None:
    async with connect(metrics_server, additional_headers=AUTH) as ws:
        await ws.run("1")
        running = asyncio.create_task(ws.run("import time; time.sleep(3)", "slow"))
        await asyncio.sleep(1)
        samples = scrape(metrics_server)
        assert value(samples, "icotes_websockets_open") == 1
        assert value(samples, "icotes_sessions", state="busy", kernelspec="python3") == 1
        assert value(samples, "icotes_kernels_in_use") >= 1
        pool = {labels: v for (name, labels), v in samples.items() if name == "icotes_pool_kernels"}
        assert (("kernelspec", "python3"), ("state", "ready")) in pool  # each spec's ready and starting
        assert (("kernelspec", "python3"), ("state", "starting")) in pool
        await running
        await ws.send({"type": "close_session"})
    for (name, labels), _ in samples.items():
        for key, label in labels:
            if key in _LABELS:
                assert label in _LABELS[key], (name, key, label)
            elif key == "kernelspec":
                assert label in ("python3", "bash"), (name, label)
            else:
                assert key == "le", (name, key)  # histogram buckets; nothing else
