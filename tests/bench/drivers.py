"""One way to talk to each system: ours over /ws and REST, raw jupyter_client, Kernel Gateway."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager

from . import servers

TIMEOUT = 120


@dataclass
class Run:
    frames: int = 0  # messages received about the execution
    text: list[str] = field(default_factory=list)  # stdout in arrival order
    first_image_at: float | None = None  # perf_counter when the first image/png arrived

    def saw(self, output_type: str, data: dict[str, Any] | None) -> None:
        if self.first_image_at is None and output_type == "display_data" and "image/png" in (data or {}):
            self.first_image_at = time.perf_counter()


class OursSession:
    def __init__(self, ws: websockets.ClientConnection, result: str, language: str | None = None) -> None:
        self.ws = ws
        self.n = 0
        self.result = result  # "full", as icotes asks; "brief": no repeat of what streamed
        self.language = language  # the server's default when None

    @classmethod
    async def open(cls, ws_url: str, result: str = "full", language: str | None = None) -> OursSession:
        ws = await websockets.connect(ws_url + "/ws", max_size=None, open_timeout=TIMEOUT)
        json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))  # the session frame
        return cls(ws, result, language)

    async def run(self, code: str) -> Run:
        self.n += 1
        rid = str(self.n)
        message = {"type": "execute_code", "code": code, "id": rid, "result": self.result}
        if self.language is not None:
            message["language"] = self.language
        await self.ws.send(json.dumps(message))
        run = Run()
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            run.frames += 1
            if frame["type"] == "output" and frame["output"]["output_type"] == "stream":
                run.text.append(frame["output"]["text"])
            elif frame["type"] == "output":
                run.saw(frame["output"]["output_type"], frame["output"].get("data"))
            if frame["type"] == "execution_result" and frame.get("id") == rid:
                return run

    async def close(self) -> None:
        # A socket that merely closes leaves its session alive for the grace period.
        await self.ws.send(json.dumps({"type": "close_session"}))
        await self.ws.close()


async def ours_one_shot(http: httpx.AsyncClient, code: str) -> None:
    result = (await http.post("/execute", json={"code": code})).json()
    assert result["status"] == "ok", result


class RawSession:
    """jupyter_client as a program would use it directly: the floor."""

    def __init__(self, km: AsyncKernelManager) -> None:
        self.km = km
        self.kc = km.client()

    @classmethod
    async def open(cls) -> RawSession:
        # The same kernel environment as the gateway's kernels run.
        specs = KernelSpecManager(kernel_dirs=[str(servers.kernelspecs() / "kernels")], ensure_native_kernel=False)
        km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
        await km.start_kernel()
        self = cls(km)
        # No heartbeat: the gateway has none either, and stopping the heartbeat thread of a
        # kernel whose heartbeat never bound (a port-race loser) hung the benchmark.
        self.kc.start_channels(hb=False)
        # A kernel that lost the TCP port race never reads: jupyter_client's blocking send
        # would then hang the whole benchmark. Fail the start instead.
        for channel in (self.kc.shell_channel, self.kc.stdin_channel, self.kc.control_channel):
            channel.socket.sndtimeo = 1000
        try:
            await self.kc.wait_for_ready(timeout=TIMEOUT)
        except BaseException:  # e.g. it lost the TCP port race: count it, leave nothing
            await self.close()
            raise
        return self

    async def run(self, code: str) -> Run:
        msg_id = self.kc.execute(code)
        run = Run()
        idle = replied = False
        while not (idle and replied):
            if not idle:
                msg = await self.kc.get_iopub_msg(timeout=TIMEOUT)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                run.frames += 1
                if msg["msg_type"] == "stream":
                    run.text.append(msg["content"]["text"])
                run.saw(msg["msg_type"], msg["content"].get("data"))
                idle = msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
            else:
                reply = await self.kc.get_shell_msg(timeout=TIMEOUT)
                replied = reply["parent_header"].get("msg_id") == msg_id
        return run

    async def close(self) -> None:
        self.kc.stop_channels()
        await self.km.shutdown_kernel(now=True)


class KGSession:
    """Kernel Gateway's Jupyter WebSocket API, the way its clients use it."""

    def __init__(self, http: httpx.AsyncClient, kernel_id: str, ws: websockets.ClientConnection) -> None:
        self.http = http
        self.kernel_id = kernel_id
        self.ws = ws
        self.session = uuid.uuid4().hex

    @classmethod
    async def open(cls, http: httpx.AsyncClient, ws_url: str) -> KGSession:
        response = await http.post("/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        kernel_id = response.json()["id"]
        ws = await websockets.connect(
            f"{ws_url}/api/kernels/{kernel_id}/channels", max_size=None, open_timeout=TIMEOUT
        )
        return cls(http, kernel_id, ws)

    async def run(self, code: str) -> Run:
        msg_id = uuid.uuid4().hex
        await self.ws.send(json.dumps(_jupyter_msg(msg_id, self.session, code)))
        run = Run()
        idle = replied = False
        while not (idle and replied):
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            run.frames += 1
            kind = msg["msg_type"]
            run.saw(kind, msg["content"].get("data"))
            if kind == "stream":
                run.text.append(msg["content"]["text"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                replied = True
        return run

    async def close(self) -> None:
        await self.ws.close()
        await self.http.delete(f"/api/kernels/{self.kernel_id}")


def _jupyter_msg(msg_id: str, session: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": session,
            "username": "bench",
            "version": "5.3",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        "channel": "shell",
        "buffers": [],
    }


async def alternating(sessions: dict[str, OursSession], blocks: int, runs: int) -> dict[str, float]:
    """Warm `1+1` p50 (ms) of each session, the sessions taking turns block by block (so a
    noisy spell of the machine hits them all); the sessions are closed afterwards."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for block in range(blocks):
        for name in sorted(sessions, reverse=block % 2 == 1):
            for _ in range(runs):
                start = time.perf_counter()
                await sessions[name].run("1+1")
                times[name].append(time.perf_counter() - start)
    for session in sessions.values():
        await session.close()
    return {name: sorted(t)[len(t) // 2] * 1000 for name, t in times.items()}
