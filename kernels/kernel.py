"""One running kernel: its manager and client, its state, and the routing of its messages.

Every message the kernel sends on iopub, shell or stdin carries the `msg_id` of the request
it answers in `parent_header`; one reader per channel (socket_io.Reader) hands each message
to the queue of that request, so a request only ever sees its own messages.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager

from . import message_codec, remote, socket_io
from .errors import KernelBusyTimeout, KernelDied, KernelStartFailed
from .exit_codes import death_reason
from .exit_watch import ExitWatch
from .launch import LaunchOptions, kernel_environment, zmq_context
from .provisioner import GatewayKernelManager

log = logging.getLogger(__name__)

# How often the death watch asks the provisioner whether the process still runs, where no
# pidfd tells it (exit_watch.py); a remote one asks over the network (gateway-provisioners:
# a TCP request to the kernel's launcher).
_DEATH_POLL_S = 0.2
_REMOTE_DEATH_POLL_S = 0.5


class KernelState(str, enum.Enum):
    """A kernel's life. Whether it is running code is a request's business (execution.py)."""

    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"


_NEXT = {
    KernelState.STARTING: {KernelState.READY, KernelState.DEAD},
    KernelState.READY: {KernelState.DEAD},
    KernelState.DEAD: set(),
}


Queue = asyncio.Queue[dict[str, Any]]
# Put in every subscribed queue when the kernel dies, so no reader waits for a dead kernel.
DIED = {"msg_type": "__died__"}


_KEPT_INFO = ("language_info", "supported_features")
_BURST = 64  # messages read from one socket before other tasks get a turn


class Kernel:
    def __init__(self, spec_name: str, manager: GatewayKernelManager) -> None:
        self.spec_name = spec_name
        self.manager = manager
        self.name: str = manager.kernel_id  # for the operator's logs
        self.client: AsyncKernelClient | None = None
        self.state = KernelState.STARTING
        self.exit_reason: str | None = None
        self.info: dict[str, Any] = {}  # what we use of kernel_info: not the banner and links
        self.interrupts = 0  # interrupts sent so far, so an execution can tell it was one
        # Set from a request's `execute_input` (its code has begun) until its `idle`.
        self.running_code = asyncio.Event()
        self.running_since = 0.0  # monotonic time of the last `execute_input`
        self._running_request: str | None = None
        self._routes: dict[str, Queue] = {}
        self._private: set[str] = set()  # requests whose messages no tap sees (the gateway's own)
        self._quiet: set[bytes] = set()  # requests whose iopub messages nobody reads (quoted ids)
        self._tasks: list[asyncio.Task[None]] = []
        self._views: dict[str, zmq.Socket] = {}  # plain views of the connected channels' sockets
        self._readers: dict[str, socket_io.Reader] = {}  # ...each read by one of these
        # The subshell requests beside a running execution go to (kernel_requests.py).
        self.subshell: asyncio.Task[str | None] | None = None
        self.taps: list[Callable[[dict[str, Any]], None]] = []  # see every message
        self.on_death: list[Callable[[], None]] = []  # called once if the process dies
        self.on_release: list[Callable[[], Awaitable[None]]] = []  # done with: shut down or handed off
        self.remote = False  # placed elsewhere by an engine (remote.py)

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def start(cls, spec_name: str, options: LaunchOptions) -> Kernel:
        """Start a kernel of `spec_name` through the provisioner its kernelspec names."""
        manager = GatewayKernelManager(
            options.local_host,
            context=zmq_context(),
            kernel_spec_manager=options.kernelspecs or KernelSpecManager(),
            kernel_name=spec_name,
            kernel_id=uuid.uuid4().hex[:12],
        )
        kernel = cls(spec_name, manager)
        kernel.remote = remote.is_remote(manager.kernel_spec)
        try:
            await asyncio.wait_for(kernel._launch(options), options.startup_timeout)
        except BaseException as exc:
            await kernel.shutdown()
            if isinstance(exc, asyncio.TimeoutError):
                raise KernelStartFailed(
                    f"kernel {spec_name!r} was not ready within kernel_startup_timeout "
                    f"({options.startup_timeout:g} s)"
                ) from None
            if isinstance(exc, Exception) and not isinstance(exc, KernelStartFailed):
                raise KernelStartFailed(f"kernel {spec_name!r} failed to start: {exc}") from exc
            raise
        return kernel

    async def _launch(self, options: LaunchOptions) -> None:
        # The provisioner's post_launch returns once the kernel can be connected to (ours
        # waits for the ipc sockets); a remote one's may return earlier, and readiness
        # below is proven by kernel_info alone, whatever the transport.
        env = kernel_environment(options.env)
        if self.remote:
            env = remote.launch_env(env, options.remote)
            self.manager.transport_encryption = remote.encryption_policy(options.remote)
        told = options.on_remote_launch if self.remote else None
        if told is not None:
            await told(self, False)
        await self.manager.start_kernel(env=env, cwd=options.cwd, extra_arguments=options.extra_arguments)
        if told is not None:
            await told(self, True)
        await self.connect()
        # Before any code runs, none of ours, none of theirs (ConfinedProvisioner.kernel_ready).
        if (ready := getattr(self.manager.provisioner, "kernel_ready", None)) is not None:
            ready()
        if options.warm_up_code is not None:
            await self.warm_up(options.warm_up_code(getattr(self.manager.provisioner, "loaded", ())))

    async def connect(self) -> None:
        """Connect the client and start reading: the process is running already."""
        # The client would otherwise make a ZMQ context of its own: two threads per kernel.
        self.client = self.manager.client(context=zmq_context())
        # No heartbeat channel: it costs a thread per kernel, and the death watch polls the
        # provisioner instead (which works for remote kernels too). Control connects on
        # first use (see send()).
        for name in ("iopub", "shell", "stdin"):
            self._open_channel(name)
        self._tasks.append(asyncio.create_task(self._watch_death()))
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        """Ready means kernel_info answered and iopub delivered a message.

        The stock wait_for_ready also flushes iopub for 200 ms; we only need proof that our
        subscription is live, which any iopub message of a kernel_info request gives.
        Unbounded here; every caller wraps it in `startup_timeout`.
        """
        while True:
            request = self.client.session.msg("kernel_info_request")
            msg_id = request["header"]["msg_id"]
            queue = self.subscribe(msg_id)
            self.send("shell", request)  # through the view: the reader alone watches the socket
            got_reply = got_iopub = False
            try:
                deadline = time.monotonic() + 0.5
                while not (got_reply and got_iopub):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        msg = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                    if msg is DIED:
                        raise KernelStartFailed(f"kernel died while starting: {self.exit_reason}")
                    if msg["msg_type"] == "kernel_info_reply":
                        got_reply = True
                        self.info = {k: msg["content"].get(k) for k in _KEPT_INFO}
                    elif msg["channel"] == "iopub":
                        got_iopub = True
            finally:
                self.unsubscribe(msg_id)
            if got_reply and got_iopub:
                self._become(KernelState.READY)
                return

    async def warm_up(self, code: str) -> None:
        """Run a throw-away cell that leaves no history, so the user's first cell does not
        pay IPython's first-execution costs. Bounded by the caller's `startup_timeout`.

        Done means replied and idle: a kernel handed out before its warm-up's `idle` would
        look as if it ran code (`running_code`) when the user's first cell is sent."""
        content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
        msg = self.client.session.msg("execute_request", content)
        queue = self.subscribe(msg["header"]["msg_id"])
        try:
            self.send("shell", msg)
            replied = idle = False
            while not (replied and idle):
                if (reply := await queue.get()) is DIED:
                    return
                replied = replied or reply["channel"] == "shell"
                idle = idle or (reply["msg_type"] == "status" and reply["content"].get("execution_state") == "idle")
        finally:
            self.unsubscribe(msg["header"]["msg_id"])

    async def interrupt(self) -> None:
        if self.is_dead:
            return
        self.interrupts += 1
        await self.manager.interrupt_kernel()

    async def shutdown(self) -> None:
        """Kill the process (and its process group) and free everything it held."""
        await self.disconnect()
        try:
            if self.manager.has_kernel:
                await self.manager.shutdown_kernel(now=True)
            elif self.manager.provisioner is not None:
                # It failed before its process ran: free what the provisioner set up for it.
                await self.manager.cleanup_resources()
        except Exception:  # the process may be gone already; cleanup must go on
            log.exception("kernel %s: shutdown failed", self.name)
        await self.released()

    async def released(self) -> None:
        """This gateway is done with the process (shut down, or handed off): its hooks."""
        hooks, self.on_release = self.on_release, []
        for failed in await asyncio.gather(*(hook() for hook in hooks), return_exceptions=True):
            if isinstance(failed, Exception):
                log.warning("kernel %s: a release hook failed: %s", self.name, failed)

    async def disconnect(self) -> None:
        """Stop reading and close the sockets; the process is left as it is."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        # Close what was connected; client.stop_channels() would first connect every
        # channel it has not yet made, only to close it again.
        for reader in self._readers.values():
            reader.stop()
        for name in self._views:
            getattr(self.client, f"{name}_channel").stop()
        self._views = {}
        self._readers = {}
        self._fail_routes("kernel shut down")

    def diagnostics(self) -> str:
        """What the provisioner knows of the process beyond the protocol, for the operator."""
        return getattr(self.manager.provisioner, "diagnostics", lambda: "")()

    # -- death -------------------------------------------------------------------------

    @property
    def is_dead(self) -> bool:
        return self.state is KernelState.DEAD

    def _become(self, state: KernelState) -> None:
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"kernel {self.name}: {self.state.value} cannot become {state.value}")
        self.state = state

    async def _watch_death(self) -> None:
        watch = ExitWatch(self.manager.provisioner, _REMOTE_DEATH_POLL_S if self.remote else _DEATH_POLL_S)
        try:
            while True:
                await watch.next()
                if self.is_dead:
                    return
                if not await self.manager.is_alive():
                    code = await self._exit_code()
                    hint = getattr(self.manager.provisioner, "death_hint", lambda: None)()
                    self._fail_routes(hint or death_reason(code))
                    for callback in self.on_death:
                        callback()
        finally:
            watch.close()

    async def _exit_code(self) -> int | None:
        return await self.manager.provisioner.poll() if self.manager.provisioner is not None else None

    def _fail_routes(self, reason: str) -> None:
        if self.is_dead:
            return
        self.exit_reason = reason
        self._become(KernelState.DEAD)
        for queue in self._routes.values():
            queue.put_nowait(DIED)

    # -- message routing ---------------------------------------------------------------

    def subscribe(self, msg_id: str, queue: Queue | None = None, private: bool = False) -> Queue:
        """The queue the messages answering `msg_id` go to: a new one, or `queue`; `private`:
        not shown to taps (a Jupyter client of the kernel has no use for them)."""
        queue = queue if queue is not None else asyncio.Queue()
        self._routes[msg_id] = queue
        if private:
            self._private.add(msg_id)
        if self.is_dead:
            queue.put_nowait(DIED)
        return queue

    def unsubscribe(self, msg_id: str) -> None:
        self._routes.pop(msg_id, None)
        self._private.discard(msg_id)
        self._quiet.discard(message_codec.quoted(msg_id))

    def quiet(self, msg_id: str) -> None:
        """Drop, unread, the iopub messages answering `msg_id` (a request of the gateway's own:
        each costs a signature check and four JSON parses); shell replies still come."""
        self._quiet.add(message_codec.quoted(msg_id))

    def _open_channel(self, name: str) -> zmq.Socket:
        """Connect a channel (jupyter_client does it on first access) and start reading it
        through a plain view of its socket (socket_io.Reader); sends use the view too."""
        socket = getattr(self.client, f"{name}_channel").socket
        view = self._views[name] = zmq.Socket.shadow(socket.underlying)
        # A send that would block (a kernel not reading: a thousand messages queued) fails
        # at once instead of stopping the event loop, and with it every session.
        view.sndtimeo = 0
        self._readers[name] = socket_io.Reader(view, lambda raw: self._route_safely(name, raw), _BURST)
        return view

    def _route_safely(self, name: str, raw: list[bytes]) -> None:
        """Route one message; whatever goes wrong with it, the reader goes on (one that
        stopped would leave every later request of this kernel waiting for nothing)."""
        try:
            self._route(name, raw)
        except Exception:
            log.exception("kernel %s: a %s message could not be routed", self.name, name)

    def _route(self, name: str, raw: list[bytes]) -> None:
        if name == "iopub" and self._quiet and message_codec.answers_any(raw, self._quiet):
            return
        try:
            msg = message_codec.deserialize(self.client.session, raw)
        except Exception as exc:  # a bad signature, or a garbled message: whatever it raises
            log.warning("kernel %s: dropped an unreadable %s message: %s", self.name, name, type(exc).__name__)
            return
        if not message_codec.well_formed(msg):
            # Signed, so from the kernel, but not a Jupyter message: its code can send anything.
            log.warning("kernel %s: dropped a malformed %s message", self.name, name)
            return
        msg["channel"] = name
        parent = msg["parent_header"].get("msg_id")
        if name == "iopub":
            if msg["msg_type"] == "status":
                self._track_status(msg, parent)
            elif msg["msg_type"] == "execute_input":
                self._running_request = parent
                self.running_since = time.monotonic()
                self.running_code.set()
        queue = self._routes.get(parent) if isinstance(parent, str) else None
        if queue is not None:
            queue.put_nowait(msg)
            if parent in self._private:
                return
        for tap in self.taps:
            tap(msg)

    def _track_status(self, msg: dict[str, Any], parent: str | None) -> None:
        if msg["content"].get("execution_state") == "idle" and parent == self._running_request:
            self._running_request = None
            self.running_code.clear()

    def send(self, channel: str, *msgs: dict[str, Any]) -> None:
        """Send messages on shell, stdin or control, as they are (header and msg_id kept).

        Through a plain view of the channel's socket, made once (jupyter_client would wrap
        the asyncio socket afresh on every send). Control connects on its first message:
        most sessions never use it, and each connected socket holds ~30 KB of libzmq buffers.
        Several messages are serialised first (NotUnicode: one cannot be, and none is sent),
        then sent back to back: waking zmq's I/O thread costs ~0.1 ms of CPU here, and one
        sent while it is awake needs no wake-up. Binary buffers follow their message's parts.
        """
        if self.is_dead or not self._views:
            raise KernelDied(self.exit_reason or "kernel is dead")
        view = self._views.get(channel) or self._open_channel(channel)
        session = self.client.session
        wire = [[*message_codec.serialize(session, msg), *(msg.get("buffers") or ())] for msg in msgs]
        try:
            for parts in wire:
                socket_io.send_parts(view, parts)
        except zmq.Again:
            raise KernelBusyTimeout(f"the kernel is not reading its {channel} messages") from None
        finally:
            # A send can take in what the kernel sent meanwhile and consume the edge of
            # zmq's FD the reader waits for: without this, a reply could sit unread for good.
            self._readers[channel].kick()

