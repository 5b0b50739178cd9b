"""Kernel messages on their way to Jupyter clients, within bounds a client cannot raise.

Every socket on `/api/kernels/{id}/channels` gets every message of its kernel. Without
bounds, sockets that read nothing multiply the gateway's memory by their number (20 of them
on one kernel printing 40 MiB took it from 134 to 471 MB). So: one byte budget for the queues
of all sockets of a kernel, one for all kernels, a limit on sockets per kernel and per client,
and the output limit of a request applied to what passes through, as to what /ws sends.

A pass-through cannot slow a kernel down (its iopub drops messages past ZMQ's high-water mark
anyway), so what does not fit is dropped, not waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyter_client.session import Session as JupyterSession

from kernels.errors import TooManySockets
from kernels.events import SessionNotice
from kernels.session import Session

from . import jupyter_wire

log = logging.getLogger("gateway")

# The only messages the gateway itself makes for Jupyter clients (no key: they are not
# signed on a WebSocket).
_MESSAGES = JupyterSession(key=b"")
_OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "update_display_data"})
_TRACKED_REQUESTS = 1024  # requests whose output is counted at once, newest kept


@dataclass
class Limits:
    kernel_bytes: int  # queued for all sockets of one kernel
    gateway_bytes: int  # queued for all sockets of all kernels
    sockets_per_kernel: int
    sockets_per_client: int
    output_bytes: int  # output passed through per request


class Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Outbox:
    """One socket's queue of encoded messages; what it holds counts against its kernel's
    budget and the gateway's. Of its kernel's budget it may hold only its share, so a
    socket that reads nothing cannot starve its kernel's other sockets."""

    def __init__(self, owner: str, v1: bool, budgets: tuple[Budget, Budget], share: Callable[[], int]) -> None:
        self.owner = owner
        self.v1 = v1
        self._budgets = budgets
        self._share = share
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.used = 0
        self.dropped = 0

    def put(self, frame: str | bytes) -> None:
        size = len(frame)
        if self.used + size > self._share() or any(b.used + size > b.limit for b in self._budgets):
            if not self.dropped:
                log.warning("a Jupyter client is not keeping up: dropping kernel messages")
            self.dropped += 1
            return
        self.dropped = 0
        self._count(size)
        self._queue.put_nowait(frame)

    async def get(self) -> str | bytes:
        frame = await self._queue.get()
        self._count(-len(frame))
        return frame

    def discard(self) -> None:
        """The socket went: give back what it still held."""
        while not self._queue.empty():
            self._count(-len(self._queue.get_nowait()))

    def _count(self, size: int) -> None:
        self.used += size
        for budget in self._budgets:
            budget.used += size


class KernelFanout:
    """The Jupyter clients of one session's kernel."""

    def __init__(self, session: Session, limits: Limits, gateway: Budget) -> None:
        self.limits = limits
        self.budget = Budget(limits.kernel_bytes)
        self._gateway = gateway
        self.outboxes: list[Outbox] = []
        self._output: OrderedDict[str, int] = OrderedDict()  # request msg_id -> bytes passed
        self._stop: list[Callable[[], None]] = [session.tap(self._on_message), session.listen(self._on_notice)]

    def join(self, owner: str, v1: bool) -> Outbox:
        outbox = Outbox(owner, v1, (self.budget, self._gateway), lambda: self.budget.limit // len(self.outboxes))
        self.outboxes.append(outbox)
        return outbox

    def leave(self, outbox: Outbox) -> None:
        self.outboxes.remove(outbox)
        outbox.discard()

    def close(self) -> None:
        for stop in self._stop:
            stop()

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg["channel"] == "iopub" and not self._within_output_limit(msg):
            return
        self._send(msg, msg["channel"])

    def _send(self, msg: dict[str, Any], channel: str) -> None:
        encoded: dict[bool, str | bytes] = {}  # once per protocol, shared by the sockets
        for outbox in self.outboxes:
            if outbox.v1 not in encoded:
                encoded[outbox.v1] = jupyter_wire.encode(msg, channel, outbox.v1)
            outbox.put(encoded[outbox.v1])

    def _within_output_limit(self, msg: dict[str, Any]) -> bool:
        """Whether an iopub message may pass: outputs count against their request's limit;
        the first one past it is replaced by a notice saying so."""
        parent = (msg.get("parent_header") or {}).get("msg_id")
        if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
            self._output.pop(parent, None)
        if msg["msg_type"] not in _OUTPUT_TYPES or not isinstance(parent, str):
            return True
        passed = self._output.pop(parent, 0)
        size = _size(msg["content"])
        over = passed <= self.limits.output_bytes < passed + size
        self._output[parent] = passed + size
        while len(self._output) > _TRACKED_REQUESTS:
            self._output.popitem(last=False)
        if over:
            notice = _MESSAGES.msg("stream", {
                "name": "stderr",
                "text": f"[output limit of {self.limits.output_bytes} bytes reached: the rest of this request's output is dropped]\n",
            })
            notice["parent_header"] = msg["parent_header"]
            self._send(notice, "iopub")
        return passed + size <= self.limits.output_bytes

    def _on_notice(self, notice: SessionNotice) -> None:
        """A kernel replaced (death, time-out, restart) is `status: restarting` on iopub, as
        Jupyter Server tells its clients of a kernel it restarted: their state is gone."""
        if notice.state == "restarting":
            self._send(_MESSAGES.msg("status", {"execution_state": "restarting"}), "iopub")


class JupyterClients:
    """Every Jupyter client socket, by kernel."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.gateway = Budget(limits.gateway_bytes)
        self._kernels: dict[str, KernelFanout] = {}

    def join(self, session: Session, owner: str, v1: bool) -> Outbox:
        fanout = self._kernels.get(session.id)
        if fanout is not None and len(fanout.outboxes) >= self.limits.sockets_per_kernel:
            raise TooManySockets(f"this kernel has {self.limits.sockets_per_kernel} sockets open (jupyter_sockets_per_kernel)")
        if sum(o.owner == owner for f in self._kernels.values() for o in f.outboxes) >= self.limits.sockets_per_client:
            raise TooManySockets(f"this client has {self.limits.sockets_per_client} kernel sockets open (jupyter_sockets_per_client)")
        if fanout is None:
            fanout = self._kernels[session.id] = KernelFanout(session, self.limits, self.gateway)
        return fanout.join(owner, v1)

    def leave(self, session: Session, outbox: Outbox) -> None:
        fanout = self._kernels.get(session.id)
        if fanout is None:
            return
        fanout.leave(outbox)
        if not fanout.outboxes:
            fanout.close()
            del self._kernels[session.id]


def _size(content: dict[str, Any]) -> int:
    if isinstance(content.get("text"), str):
        return len(content["text"])
    data = content.get("data")
    if not isinstance(data, dict):
        return 0
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in data.values())
