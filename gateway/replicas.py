"""This gateway among replicas that share a store (store.py): its heartbeat, the record of
each session it holds, where a session it does not hold is served, and taking over the
sessions of a replica that died.

A session is held by one replica at a time; the others forward to it (forwarding.py). When a
holder's heartbeat lapses, the first replica to claim each of its sessions attaches to the
session's kernels from the stored record (kernels/handoff.py): their state is intact, the
frames' seqs go on above the last one the dead replica could have used, and one frame says
what may be missing. Sessions with a kernel that ran on the dead replica's host end, and
their clients are told so.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Any

import httpx
from starlette.requests import HTTPConnection

from kernels import handoff
from kernels.errors import GatewayError, KernelStartFailed, SessionLost, SessionMoving
from kernels.kernel import Kernel
from kernels.launch import LaunchOptions
from kernels.session import SessionState

from .access import FORWARDED, forwarded_mark
from .channel import SessionChannel
from .heartbeat import Heartbeat
from .protocol import LostRange, StatusFrame
from .registry import SessionRegistry
from .settings import Settings
from .store import SessionRecord, Store

log = logging.getLogger("gateway")

_RESERVE = 256  # seqs reserved in the store at a time, ahead of the frames published
_LAUNCH_RECORD_S = 1.0  # the longest a launch, or a frame, waits for the store


class FrameMirror:
    """A channel's frames kept in the store, and its seqs reserved there before use."""

    def __init__(self, store: Store, session_id: str, reserved: int) -> None:
        self._store = store
        self._session_id = session_id
        self.reserved = reserved
        self._raising: asyncio.Future[None] | None = None

    async def keep(self, seq: int, text: str) -> None:
        self._store.append(self._session_id, seq, text)
        # Raised ahead, so a frame waits for the store only in a burst faster than a round trip.
        if seq + _RESERVE // 2 > self.reserved and self._raising is None:
            self._raising = asyncio.ensure_future(self._raise(seq + _RESERVE))
        while seq > self.reserved and self._raising is not None:
            await asyncio.shield(self._raising)
            if seq > self.reserved and self._raising is None:
                self._raising = asyncio.ensure_future(self._raise(seq + _RESERVE))

    async def _raise(self, seq: int) -> None:
        try:
            await asyncio.wait_for(self._store.reserve(self._session_id, seq), _LAUNCH_RECORD_S)
            self.reserved = seq
        except Exception as exc:  # the store is down: serve on, a takeover could not happen anyway
            log.warning("store: session %s: seqs not reserved (%s)", self._session_id, exc or "timed out")
            self.reserved = seq
        finally:
            self._raising = None


class Replicas:
    def __init__(self, settings: Settings, registry: SessionRegistry, options_for: Callable[[str], LaunchOptions]) -> None:
        assert settings.store_url is not None and settings.store_secret is not None
        self.settings = settings
        self.id = secrets.token_hex(8)
        self.address = settings.replica_address or f"http://{settings.host}:{settings.port}"
        self.mark = forwarded_mark(settings.store_secret)
        self.store = Store(settings.store_url, settings.store_secret, self.id, settings.session_log_frames)
        self.registry = registry
        self._options_for = options_for
        self._taking: dict[str, asyncio.Future[None]] = {}
        self._recorded: set[str] = set()  # sessions whose record says this replica holds them
        self._kernels: dict[str, dict[str, Any]] = {}  # its remote kernels' entries in the store
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat = Heartbeat(settings.store_url, self.id, self.address, settings.replica_heartbeat_s, settings.replica_ttl_s)
        # To other replicas; no read time-out: a forwarded execution streams while it runs.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=3.0))

    async def start(self) -> None:
        await asyncio.to_thread(self._heartbeat.start)
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._sweep())]
        log.info("replica %s at %s: sharing the store", self.id, self.address)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._heartbeat.stop)
        await self.http.aclose()
        try:  # its sessions closed, its pool shut down: nothing to take over, unless a
            # drain left sessions of remote kernels for the others to take (drain.py)
            if not await self.store.held_by(self.id):
                await self.store.forget_replica(self.id)
        except Exception as exc:
            log.warning("store: replica %s not removed: %s", self.id, exc)
        await self.store.close()

    def report(self) -> dict[str, Any]:
        return {"id": self.id, "store": "reachable" if self._heartbeat.reached else "unreachable"}

    # -- this replica's remote kernels -------------------------------------------------

    async def launched(self, kernel: Kernel, reported: bool) -> None:
        """A remote kernel this replica starts (LaunchOptions.on_remote_launch): in the
        store from before its launch until released, so it is shut down if this replica
        dies first; with what it takes to reach it once its engine reported it launched."""
        kernel_id = kernel.manager.kernel_id
        saved = await handoff.saved(kernel) if reported else None
        entry = self._kernels[kernel_id] = {"spec": kernel.spec_name, "kernel_id": kernel_id, "saved": saved}
        if not reported:
            kernel.on_release.append(lambda: self._forget_kernel(kernel_id))
        try:  # bounded: a store that does not answer must not hold up the launch
            await asyncio.wait_for(self.store.add_kernels({kernel_id: entry}), _LAUNCH_RECORD_S)
        except Exception as exc:  # the kernel starts anyway (the watch records it later)
            log.warning("store: kernel %s not recorded: %s", kernel_id, exc or "timed out")

    async def _attach(self, spec_name: str, saved: dict[str, Any]) -> Kernel:
        """A kernel taken over; the claim moved its entry in the store to this replica's."""
        kernel = await handoff.attach(spec_name, saved, self._options_for(spec_name))
        kernel_id = kernel.manager.kernel_id
        self._kernels[kernel_id] = {"spec": spec_name, "kernel_id": kernel_id, "saved": saved}
        kernel.on_release.append(lambda: self._forget_kernel(kernel_id))
        return kernel

    async def _forget_kernel(self, kernel_id: str) -> None:
        self._kernels.pop(kernel_id, None)
        await self.store.drop_kernel(kernel_id)

    async def _record_kernels(self) -> None:
        """Write this replica's remote kernels again when the store lacks some (it
        restarted empty, or was down at a launch)."""
        if self._kernels and await self.store.kernel_count() < len(self._kernels):
            await self.store.add_kernels(dict(self._kernels))

    # -- this replica's sessions -------------------------------------------------------

    async def watch(self, channel: SessionChannel, reserved: int = 0) -> None:
        """Keep the session's record and frames in the store from now on."""
        channel.mirror = FrameMirror(self.store, channel.session.id, reserved)
        channel.session.kernels.on_change.append(lambda: channel.spawn(self.record(channel)))
        await self.record(channel)

    async def record(self, channel: SessionChannel) -> None:
        session = channel.session
        kernels = []
        for spec_name in session.kernels.specs():
            kernel = session.kernels.get(spec_name)
            if kernel is not None:
                saved = await handoff.saved(kernel) if kernel.remote else None
                kernels.append({"spec": spec_name, "remote": kernel.remote, "saved": saved})
        record = SessionRecord(channel.owner, self.id, session.spec_name, channel.owned_by_socket, 0, kernels)
        if session.state is not SessionState.CLOSED:
            await self.store.save(session.id, record)
            self._recorded.add(session.id)

    async def ended(self, channel: SessionChannel) -> None:
        """The session was closed here: out of the store (unless the store ended it first)."""
        if channel.session.id in self._recorded:
            self._recorded.discard(channel.session.id)
            await self.store.end(channel.session.id, self.id, channel.owner, None)

    async def sessions_of(self, owner: str) -> int:
        return await self.store.sessions_of(owner)

    # -- where a session is ------------------------------------------------------------

    async def locate(self, session_id: str, owner: str, forwarded: bool) -> str | None:
        """The address of the replica serving the session, or None: served here (taken
        over just now, if its replica had died), or no such session of `owner`'s."""
        for _ in range(3):  # a claim lost to another replica: look again
            record = await self.store.load(session_id)
            if record is None or not hmac.compare_digest(record.owner, owner):
                return None
            if record.ended is not None:
                raise SessionLost(record.ended)
            if record.replica == self.id:
                if (taking := self._taking.get(session_id)) is not None:
                    await asyncio.shield(taking)
                return None
            address = await self.store.address_of(record.replica)
            if address is not None:
                if forwarded:  # it was sent here as the holder: it is on its way elsewhere
                    raise SessionMoving("the session is moving between gateway replicas; try again")
                return address
            if not await self.store.known(record.replica):  # the store restarted: not beating yet
                raise SessionMoving("the session's replica is reconnecting to the session store; try again")
            await self.take_over(session_id, record.replica)
        raise SessionMoving("the session is moving between gateway replicas; try again")

    async def listed_elsewhere(self, conn: HTTPConnection, owner: str, path: str) -> list[dict[str, Any]]:
        """The caller's sessions other live replicas hold, each as its replica describes it
        at `path` (`{}`: the session id)."""
        ids = [sid for sid in await self.store.owned_by(owner) if sid not in self.registry]
        found = await asyncio.gather(*(self.describe_elsewhere(conn, sid, path.format(sid)) for sid in ids))
        return [model for model in found if model is not None]

    async def describe_elsewhere(self, conn: HTTPConnection, session_id: str, path: str) -> dict[str, Any] | None:
        """What the live replica holding the session answers at `path`, asked with the
        caller's own token; None when no live replica holds it."""
        record = await self.store.load(session_id)
        if record is None or record.ended is not None or record.replica == self.id:
            return None
        address = await self.store.address_of(record.replica)
        if address is None:  # dead: the sweep takes it over in a moment
            return None
        headers = {FORWARDED.decode(): self.mark}
        if (auth := conn.headers.get("authorization")) is not None:
            headers["authorization"] = auth
        params = {"token": conn.query_params["token"]} if "token" in conn.query_params else None
        try:
            answer = await self.http.get(address + path, headers=headers, params=params, timeout=5)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    # -- takeover ----------------------------------------------------------------------

    async def take_over(self, session_id: str, from_replica: str) -> None:
        if (taking := self._taking.get(session_id)) is not None:
            await asyncio.shield(taking)
            return
        self._taking[session_id] = done = asyncio.get_running_loop().create_future()
        try:
            if await self.store.claim(session_id, from_replica):
                record = await self.store.load(session_id)
                if record is not None:
                    await self._restore(session_id, record)
        finally:
            del self._taking[session_id]
            done.set_result(None)

    async def _restore(self, session_id: str, record: SessionRecord) -> None:
        kernels: dict[str, Kernel] = {}
        try:
            local = [k["spec"] for k in record.kernels if not k["remote"]]
            if local or not record.kernels:
                raise SessionLost(
                    f"the session ended: its {', '.join(local) or 'kernel'} kernel ran on the gateway replica "
                    "that stopped, and its state went with it"
                )
            for k in record.kernels:
                kernels[k["spec"]] = await self._attach(k["spec"], k["saved"])
        except Exception as exc:
            await self._give_up(session_id, record, kernels, exc)
            return
        frames = await self.store.frames(session_id)
        channel = self.registry.restore(session_id, record.owner, record.spec, kernels, record.owned_by_socket)
        channel.resume_log(frames, record.seq_reserved + 1)
        await self.watch(channel, record.seq_reserved)
        stored = frames[-1][0] if frames else 0
        await channel.publish(StatusFrame(
            execution_state=channel.session.state.value,
            message="this session moved to another gateway replica (its own stopped): what its kernels sent "
            "meanwhile, and the result of code that was running then, may be missing; variables are intact",
            lost=LostRange(from_seq=stored + 1, to_seq=record.seq_reserved) if stored < record.seq_reserved else None,
        ))
        log.info("session %s: taken over from replica %s", session_id, record.replica)

    async def _give_up(self, session_id: str, record: SessionRecord, kernels: dict[str, Kernel], exc: Exception) -> None:
        """End a session that cannot be taken over; its remote kernels are shut down (they
        would run on, unreachable by anyone)."""
        for k in record.kernels:
            if k["remote"] and k["spec"] not in kernels:
                try:
                    kernels[k["spec"]] = await self._attach(k["spec"], k["saved"])
                except KernelStartFailed:  # gone already
                    await self.store.drop_kernel(k["saved"]["kernel_id"])
        await asyncio.gather(*(kernel.shutdown() for kernel in kernels.values()), return_exceptions=True)
        if isinstance(exc, SessionLost):
            reason = str(exc)
        elif isinstance(exc, GatewayError):
            reason = f"the session ended when its gateway replica stopped: {exc}"
        else:
            reason = "the session ended when its gateway replica stopped: it could not be taken over"
            log.error("session %s: takeover failed", session_id, exc_info=exc)
        await self.store.end(session_id, self.id, record.owner, reason)
        log.info("session %s: ended at takeover: %s", session_id, reason)

    # -- background --------------------------------------------------------------------

    async def _watch(self) -> None:
        """At each heartbeat's pace: what the store says of this replica's sessions and kernels."""
        while True:
            await asyncio.sleep(self.settings.replica_heartbeat_s)
            try:
                await self._let_go_of_moved()
                await self._record_kernels()
            except Exception as exc:
                log.warning("store: could not check this replica's sessions: %s", exc)

    async def _let_go_of_moved(self) -> None:
        """A session another replica took over (this one was thought dead: its heartbeat
        lapsed) is let go of here, its kernels left running for the new holder; one it
        ended (its kernels were this replica's own) is closed here. One the store forgot
        (it restarted empty) is recorded again instead."""
        held = set(await self.store.held_by(self.id))
        for channel in self.registry:
            session_id = channel.session.id
            if session_id not in self._recorded or session_id in held or session_id in self._taking:
                continue
            record = await self.store.load(session_id)
            if record is None:
                await self.record(channel)
                if channel.mirror is not None:  # seqs above this may have been sent
                    await self.store.reserve(session_id, channel.mirror.reserved)
            elif record.ended is not None:  # ended by the claimer: its local kernels go here
                self._recorded.discard(session_id)
                await self.registry.close(session_id, record.ended)
            elif record.replica != self.id:
                self._recorded.discard(session_id)
                await self.registry.hand_over(session_id)

    async def _shut_down_strays(self, replica_id: str) -> None:
        """A dead replica's remote kernels that no session took along (pooled, starting,
        being replaced): nobody else can reach them."""
        for k in await self.store.take_kernels(replica_id):
            if k["saved"] is None:  # its launcher could not report back to the dead replica
                await handoff.kill_unreported(k["spec"], k["kernel_id"], self._options_for(k["spec"]))
                continue
            try:
                kernel = await handoff.attach(k["spec"], k["saved"], self._options_for(k["spec"]))
            except KernelStartFailed:
                continue  # gone already, or never ready: nothing answers on its ports
            await kernel.shutdown()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_heartbeat_s)
            try:
                for replica_id in await self.store.dead_replicas():
                    await asyncio.gather(*(self.take_over(sid, replica_id) for sid in await self.store.held_by(replica_id)))
                    if not await self.store.held_by(replica_id):  # every session claimed
                        await self._shut_down_strays(replica_id)
                        await self.store.forget_replica(replica_id)
            except Exception as exc:
                log.warning("store: takeover sweep failed: %s", exc)
