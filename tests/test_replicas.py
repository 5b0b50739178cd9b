"""Gateway replicas sharing a real Redis (tests/services.py), kernels on a real SSH host
(tests/ssh_host.py): any replica serves any session, a SIGKILLed replica's sessions with
remote kernels are taken over with their state, and through haproxy (round robin, no
stickiness) a soak of reconnecting sessions loses no frame silently."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets

from .conftest import WHOAMI, Client, GatewayServer, connect, free_port, result_of, wait_gone
from .services import Haproxy, Redis
from .ssh_host import SPEC, SshHost
from .test_remote import _kernel_python

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
AUTH = {"Authorization": f"Bearer {ALICE}"}
SECRET = "replicas-shared-secret"


class Cluster:
    """Two replicas sharing one store, kernels on the SSH host; a killed one can be replaced."""

    def __init__(self, ssh_host: SshHost, store: Redis) -> None:
        self.ssh_host = ssh_host
        self.store = store
        self.started = 0
        self.replicas = [self._start(), self._start()]

    def _start(self) -> GatewayServer:
        self.started += 1
        return GatewayServer(
            env=self.ssh_host.gateway_env(free_port()),
            store_url=self.store.url,
            store_secret=SECRET,
            tokens={"alice": ALICE, "bob": BOB},
            client_max_sessions=12,
            pool_size=1,  # a remote kernel waits in each pool: a dead replica's must not be left
            session_grace_s=60,
            idle_timeout_s=60,
            kernel_uid_base=77000 + 1000 * self.started,
            kernelspec_dirs=[str(self.ssh_host.specs)],
            languages={"python": "python3", "ssh": SPEC},
        )

    def kill(self, i: int) -> None:
        """SIGKILL replica `i` (no goodbye to the store), and start a new one in its place."""
        dead = self.replicas[i]
        dead.proc.kill()
        dead.proc.wait(timeout=10)
        dead.stop()
        self.replicas[i] = self._start()

    def terminate(self, i: int) -> set[int]:
        """SIGTERM replica `i` (it drains), and start a new one in its place; the local
        kernel pids it left behind."""
        left = self.replicas[i].stop()
        self.replicas[i] = self._start()
        return left

    def stop(self) -> set[int]:
        left: set[int] = set()
        for replica in self.replicas:
            left |= replica.stop()
        return left


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[SshHost]:
    host = SshHost(_kernel_python())
    yield host
    left = host.describe(host.wait_no_processes(timeout=30))
    host.stop()
    assert not left, f"processes left on the SSH host: {left}"


@pytest.fixture(scope="module")
def store() -> Iterator[Redis]:
    server = Redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(ssh_host: SshHost, store: Redis) -> Iterator[Cluster]:
    c = Cluster(ssh_host, store)
    yield c
    assert not c.stop(), "kernel processes left after the replicas stopped"


def _session(replica: GatewayServer, language: str = "ssh") -> str:
    r = httpx.post(f"{replica.url}/sessions", json={"language": language}, headers=AUTH, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run(replica: GatewayServer, session_id: str, code: str) -> dict[str, Any]:
    r = httpx.post(f"{replica.url}/sessions/{session_id}/execute", json={"code": code}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _delete(replica: GatewayServer, session_id: str) -> None:
    httpx.delete(f"{replica.url}/sessions/{session_id}", headers=AUTH, timeout=30)


async def test_any_replica_serves_a_session_over_every_surface(cluster: Cluster) -> None:
    a, b = cluster.replicas
    ids = {r.health()["replica"]["id"] for r in (a, b)}
    assert len(ids) == 2 and all(r.health()["replica"]["store"] == "reachable" for r in (a, b))
    sid = _session(a, "python")  # a local kernel of a's: only a can run it, b forwards
    try:
        assert _run(b, sid, "x = 40; print(x + 2)")["output"] == ["42"]
        assert httpx.get(f"{b.url}/sessions/{sid}", headers=AUTH).json()["id"] == sid
        one_shot = httpx.post(f"{b.url}/execute", json={"code": "print(x)", "session_id": sid}, headers=AUTH, timeout=60)
        assert one_shot.json()["output"] == ["40"]
        streamed = httpx.post(f"{b.url}/sessions/{sid}/execute", json={"code": "print(x + 1)", "stream": True}, headers=AUTH, timeout=60)
        lines = [json.loads(line) for line in streamed.text.splitlines()]
        assert streamed.headers["content-type"].startswith("application/x-ndjson")
        assert lines[-1]["type"] == "execution_result" and lines[-1]["output"] == ["41"]
        # the /ws protocol, replay included
        async with connect(b, f"/ws?session_id={sid}&last_seq=0", additional_headers=AUTH) as client:
            assert client.session["resumed"] is True
            assert result_of(await client.run("print(x * 2)"))["output"] == ["80"]
        # the Jupyter API: a kernel id of a's is valid at b, listed there, and its channels work
        assert httpx.get(f"{b.url}/api/kernels/{sid}", headers=AUTH).json()["id"] == sid
        assert sid in [k["id"] for k in httpx.get(f"{b.url}/api/kernels", headers=AUTH).json()]
        assert sid in [s["id"] for s in httpx.get(f"{b.url}/sessions", headers=AUTH).json()]
        assert await _jupyter_execute(b, sid, "print(x + 3)") == "43\n"
        assert httpx.post(f"{b.url}/api/kernels/{sid}/interrupt", headers=AUTH).status_code == 204
        # files: an upload through b, streamed on to a (3 MiB, no Content-Length), read by code there
        chunks = (bytes([i]) * 2**20 for i in range(3))
        put = httpx.put(f"{b.url}/sessions/{sid}/files/up.bin", content=chunks, headers=AUTH, timeout=60)
        assert put.status_code == 201 and put.json()["size"] == 3 * 2**20, put.text
        assert _run(b, sid, "print(open('up.bin', 'rb').read().count(2))")["output"] == [str(2**20)]
        assert httpx.get(f"{b.url}/sessions/{sid}/files/up.bin", headers=AUTH, timeout=60).content[-1:] == b"\x02"
        assert [e["name"] for e in httpx.get(f"{b.url}/sessions/{sid}/files", headers=AUTH).json()["entries"]].count("up.bin") == 1
    finally:
        _delete(b, sid)
    assert httpx.get(f"{a.url}/sessions/{sid}", headers=AUTH).status_code == 404
    assert httpx.get(f"{b.url}/sessions/{sid}", headers=AUTH).status_code == 404


async def _jupyter_execute(replica: GatewayServer, kernel_id: str, code: str) -> str:
    msg_id = f"m{random.random()}"
    request = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t", "session": "s", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
    }
    url = f"{replica.ws_url}/api/kernels/{kernel_id}/channels"
    async with websockets.connect(url, additional_headers=AUTH, open_timeout=30) as ws:
        await ws.send(json.dumps(request))
        text = ""
        async with asyncio.timeout(30):
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    text += msg["content"]["text"]
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return text


def test_jupyter_sessions_are_the_same_at_every_replica(cluster: Cluster) -> None:
    """`/api/sessions` (JupyterLab's notebook path -> kernel) is one set across replicas."""
    a, b = cluster.replicas
    body = {"path": "work/analysis.ipynb", "type": "notebook", "name": "analysis", "kernel": {"name": "python3"}}
    made = httpx.post(f"{a.url}/api/sessions", json=body, headers=AUTH, timeout=60)
    assert made.status_code == 201, made.text
    session = made.json()
    try:
        listed = httpx.get(f"{b.url}/api/sessions", headers=AUTH, timeout=30).json()
        assert [(s["id"], s["kernel"]["id"]) for s in listed] == [(session["id"], session["kernel"]["id"])]
        again = httpx.post(f"{b.url}/api/sessions", json=body, headers=AUTH, timeout=60)
        assert again.status_code == 201 and again.json()["id"] == session["id"]  # one session per path
        renamed = httpx.patch(f"{b.url}/api/sessions/{session['id']}", json={"name": "renamed"}, headers=AUTH, timeout=30)
        assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
        assert httpx.get(f"{a.url}/api/sessions/{session['id']}", headers=AUTH).json()["name"] == "renamed"
        bob = {"Authorization": f"Bearer {BOB}"}
        assert httpx.get(f"{b.url}/api/sessions/{session['id']}", headers=bob).status_code == 404
        assert httpx.get(f"{b.url}/api/sessions", headers=bob).json() == []
    finally:
        assert httpx.delete(f"{b.url}/api/sessions/{session['id']}", headers=AUTH, timeout=30).status_code == 204
    assert httpx.get(f"{a.url}/api/sessions", headers=AUTH).json() == []
    assert httpx.get(f"{a.url}/api/kernels/{session['kernel']['id']}", headers=AUTH).status_code == 404  # its kernel went too


def test_forwarding_keeps_every_access_rule(cluster: Cluster) -> None:
    a, b = cluster.replicas
    sid = _session(a, "python")
    try:
        assert httpx.get(f"{b.url}/sessions/{sid}").status_code == 401  # no token
        bob = {"Authorization": f"Bearer {BOB}"}
        assert httpx.get(f"{b.url}/sessions/{sid}", headers=bob).status_code == 404  # not bob's
        assert sid not in [k["id"] for k in httpx.get(f"{b.url}/api/kernels", headers=bob).json()]
        # a forged forwarding mark does not let a rebinding page's Host or Origin through
        forged = {**AUTH, "x-icotes-forwarded": "0" * 64, "Host": "evil.example"}
        assert httpx.get(f"{b.url}/sessions/{sid}", headers=forged).status_code == 403
        origin = {**AUTH, "x-icotes-forwarded": "0" * 64, "Origin": "http://evil.example"}
        assert httpx.post(f"{b.url}/sessions/{sid}/execute", json={"code": "1"}, headers=origin).status_code == 403
    finally:
        _delete(a, sid)


async def test_the_store_holds_no_usable_kernel_key(cluster: Cluster, store: Redis) -> None:
    """The connection key and CurveZMQ secret let whoever has them run code in the kernel:
    nothing in the store shows them (tenants' kernels may reach the store's network)."""
    a, _ = cluster.replicas
    sid = _session(a)
    try:
        secrets = _run(a, sid, _CONNECTION_SECRETS)["output"]
        assert len(secrets) == 2 and all(len(s) >= 32 for s in secrets), secrets
        conn = redis.Redis.from_url(store.url)
        try:
            record = conn.hgetall(f"icg:session:{sid}")
            assert record[b"owner"] == b"alice" and b"kernels" in record
            async with connect(a, f"/ws?session_id={sid}", additional_headers=AUTH) as client:
                await client.run("print('kept for a replay from any replica')")
            deadline = time.monotonic() + 5  # frames are written a moment after they are sent
            while conn.xlen(f"icg:frames:{sid}") < 4:
                assert time.monotonic() < deadline, "the session's frames are not in the store"
                await asyncio.sleep(0.05)
            for key in conn.scan_iter("icg:*"):
                for value in _values(conn, key):
                    for secret in secrets:
                        assert secret.encode() not in value, f"{key!r} shows a kernel secret"
        finally:
            conn.close()
    finally:
        _delete(a, sid)


def _values(conn: redis.Redis, key: bytes) -> list[bytes]:
    kind = conn.type(key)
    if kind == b"string":
        return [conn.get(key)]
    if kind == b"hash":
        return list(conn.hgetall(key).values())
    if kind == b"set":
        return list(conn.smembers(key))
    if kind == b"stream":
        return [v for _, fields in conn.xrange(key) for v in fields.values()]
    raise AssertionError(f"{key!r}: a {kind!r} the test does not read")


# Run in the kernel: its own connection file's signing key and CurveZMQ secret key.
_CONNECTION_SECRETS = """
import json
from ipykernel.kernelapp import IPKernelApp
info = json.load(open(IPKernelApp.instance().connection_file))
print(info["key"]); print(info["curve_secretkey"])
"""


def test_an_outage_of_the_store_costs_only_what_needs_it(cluster: Cluster, store: Redis) -> None:
    """Redis killed: a replica serves its own sessions on, others answer 503 for them (a
    clear error, no traceback); Redis back, empty: the sessions are recorded again."""
    a, b = cluster.replicas
    sid = _session(a, "python")
    try:
        store.kill()
        try:
            assert _run(a, sid, "print('still here')")["output"] == ["still here"]
            refused = httpx.get(f"{b.url}/sessions/{sid}", headers=AUTH, timeout=30)
            assert refused.status_code == 503 and "store is unreachable" in refused.json()["detail"]
            deadline = time.monotonic() + 10
            while a.health()["replica"]["store"] != "unreachable":
                assert time.monotonic() < deadline, "/health does not say the store is unreachable"
                time.sleep(0.1)
        finally:
            store.start()
        deadline = time.monotonic() + 15
        while (found := httpx.get(f"{b.url}/sessions/{sid}", headers=AUTH, timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, f"the session was not recorded again: {found.text}"
            time.sleep(0.2)
        assert _run(b, sid, "print('and through b')")["output"] == ["and through b"]
    finally:
        _delete(a, sid)


async def test_a_killed_replicas_remote_sessions_go_on_elsewhere(cluster: Cluster) -> None:
    a, b = cluster.replicas
    remote = _session(a)  # on the SSH host: it outlives a
    local = _session(a, "python")  # a child of a's: it dies with a
    async with connect(a, f"/ws?session_id={remote}", additional_headers=AUTH) as client:
        before = result_of(await client.run("import os\nstate = 'kept'\nprint(os.getpid())"))
        last_seq = before["seq"]
    cluster.kill(0)
    client = await _reconnect(b, remote, last_seq, deadline_s=15)
    async with client.ws:
        first = client.session
        assert first["resumed"] is True and first["last_seq"] > last_seq
        frames = [await client.recv() for _ in range(first["replayed"])]
        notice = frames[-1]
        assert notice["type"] == "status" and "moved to another gateway replica" in notice["message"]
        assert notice["seq"] > last_seq  # seq goes on, above all the dead replica could have used
        after = result_of(await client.run("print(state, os.getpid())", id="after"))
        assert after["output"] == [f"kept {before['output'][0]}"]  # the same process, state intact
        assert after["seq"] > notice["seq"]
    # the session whose kernel was the dead replica's own: its clients are told it is gone
    gone = httpx.get(f"{b.url}/sessions/{local}", headers=AUTH)
    assert gone.status_code == 410 and "state went with it" in gone.json()["detail"]
    async with websockets.connect(f"{b.ws_url}/ws?session_id={local}", additional_headers=AUTH) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "error" and "state went with it" in error["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4410
    _delete(b, remote)


async def test_a_drained_replicas_remote_sessions_move_to_another(cluster: Cluster) -> None:
    a, b = cluster.replicas
    remote = _session(a)
    local = _session(a, "python")
    async with connect(a, f"/ws?session_id={remote}", additional_headers=AUTH) as client:
        before = result_of(await client.run("import os\nstate = 'drained'\nprint(os.getpid())"))
        last_seq = before["seq"]
        stopping = asyncio.get_running_loop().run_in_executor(None, cluster.terminate, 0)
        with pytest.raises(websockets.ConnectionClosed) as told:
            await client.until(lambda f: False, 20)
        assert told.value.rcvd.code == 1012  # "service restart": reconnect
    assert not await asyncio.wait_for(stopping, 60)  # its own kernels: shut down
    client = await _reconnect(b, remote, last_seq, deadline_s=15)
    async with client.ws:
        after = result_of(await client.run("print(state, os.getpid())", id="after"))
        assert after["output"] == [f"drained {before['output'][0]}"]  # the same process, state intact
    # A session of the drained replica's own kernel was closed with it, as on any shutdown.
    assert httpx.get(f"{b.url}/sessions/{local}", headers=AUTH).status_code == 404
    _delete(b, remote)


async def test_a_replica_only_paused_lets_go_of_what_was_taken_over(cluster: Cluster, store: Redis) -> None:
    """SIGSTOP a replica past its heartbeat's time to live: another takes its session over.
    When it runs again it lets go (its socket closed 4409) and leaves the kernel running;
    a session of its own local kernel, which the other ended, it closes, kernel and all."""
    a, b = cluster.replicas
    sid = _session(a)
    local = _session(a, "python")
    connection_file = _run(a, local, WHOAMI)["output"][0]
    b_id = b.health()["replica"]["id"]
    conn = redis.Redis.from_url(store.url)
    try:
        async with connect(a, f"/ws?session_id={sid}", additional_headers=AUTH) as client:
            before = result_of(await client.run("import os\nprint(os.getpid())"))["output"]
            a.proc.send_signal(signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 20
                while conn.hget(f"icg:session:{sid}", "replica") != b_id.encode():
                    assert time.monotonic() < deadline, "the paused replica's session was not taken over"
                    await asyncio.sleep(0.1)
            finally:
                a.proc.send_signal(signal.SIGCONT)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.until(lambda f: False, timeout=15)
            assert closed.value.rcvd.code == 4409
        moved = await _reconnect(b, sid, None, deadline_s=15)
        async with moved.ws:
            after = result_of(await moved.run("print(os.getpid())", id="after"))["output"]
        assert after == before  # the same kernel process: the paused replica did not stop it
        assert httpx.get(f"{a.url}/sessions/{sid}", headers=AUTH, timeout=30).status_code == 200  # forwarded to b
        await wait_gone(connection_file)
        assert httpx.get(f"{a.url}/sessions/{local}", headers=AUTH, timeout=30).status_code == 410
    finally:
        conn.close()
        _delete(b, sid)


def test_a_kernel_still_launching_when_its_replica_dies_is_killed(cluster: Cluster, ssh_host: SshHost, store: Redis) -> None:
    """Its launcher reports to the replica that started it, which is dead: nobody ever gets
    its keys. Another replica finds it in the store and has the engine kill it by its id."""
    doomed = GatewayServer(
        env=ssh_host.gateway_env(free_port()), store_url=store.url, store_secret=SECRET, tokens={"alice": ALICE},
        pool_size=1, kernel_uid_base=95000, kernelspec_dirs=[str(ssh_host.specs)], languages={"ssh": SPEC},
    )
    try:
        deadline = time.monotonic() + 30
        while not (launched := re.search(r"kernel launched\..*Kernel ID: ([0-9a-f]+)", doomed.log())):
            assert time.monotonic() < deadline, "the pool's remote kernel was not launched"
            time.sleep(0.02)
        # Stopped before it reads the launcher's report (the launcher takes a second to make
        # one), then killed: the report is never read.
        doomed.proc.send_signal(signal.SIGSTOP)
        kernel_id = launched.group(1)
        doomed.proc.kill()
        doomed.proc.wait(timeout=10)
    finally:
        doomed.stop()
    deadline = time.monotonic() + 30
    while not _launched_on_host(ssh_host, kernel_id):  # it goes on starting on the host...
        assert time.monotonic() < deadline, "the launcher did not run on the host"
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while _launched_on_host(ssh_host, kernel_id):  # ...until another replica has it killed
        assert time.monotonic() < deadline, f"kernel {kernel_id} still runs on the host"
        time.sleep(0.2)
    # ...by the engine, by its id: nobody could reach its launcher
    assert any(f"kernel {kernel_id} (ssh_python): launched, never reported back" in r.log() for r in cluster.replicas)


def _launched_on_host(host: SshHost, kernel_id: str) -> bool:
    return any(kernel_id in line for line in host.describe(host.processes()))


async def _reconnect(via: Any, session_id: str, last_seq: int | None, deadline_s: float) -> Client:
    """A socket attached to the session through `via`, retried while the session moves."""
    deadline = time.monotonic() + deadline_s
    query = f"/ws?session_id={session_id}" + (f"&last_seq={last_seq}" if last_seq is not None else "")
    while True:
        try:
            ws = await websockets.connect(via.ws_url + query, additional_headers=AUTH, open_timeout=10, max_size=2**26)
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if first["type"] == "session":
                client = Client(ws)
                client.session = first
                return client
            await ws.close()
            reason = first
        except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
            reason = exc
        assert time.monotonic() < deadline, f"session {session_id} not served again: {reason}"
        await asyncio.sleep(0.2)


def test_a_clients_share_counts_its_sessions_on_every_replica(ssh_host: SshHost, store: Redis) -> None:
    pair = [
        GatewayServer(
            store_url=store.url, store_secret=SECRET, tokens={"alice": ALICE, "bob": BOB},
            client_max_sessions=3, pool_size=1, kernel_uid_base=base, languages={"python": "python3"},
            idle_timeout_s=8, cull_interval_s=0.5,  # long enough to make three sessions in
        )
        for base in (90000, 91000)
    ]
    made: list[str] = []
    try:
        made += [_session(pair[0], "python"), _session(pair[1], "python"), _session(pair[0], "python")]
        refused = httpx.post(f"{pair[1].url}/sessions", json={"language": "python"}, headers=AUTH, timeout=30)
        assert refused.status_code == 429 and "on all replicas" in refused.json()["detail"]
        bob = httpx.post(f"{pair[1].url}/sessions", json={"language": "python"}, headers={"Authorization": f"Bearer {BOB}"}, timeout=30)
        assert bob.status_code == 201  # another client's share is its own
        # culled by the replica that holds them, idle past idle_timeout_s: gone from every replica
        deadline = time.monotonic() + 30
        while httpx.get(f"{pair[1].url}/sessions", headers=AUTH).json():
            assert time.monotonic() < deadline, "idle sessions were not culled"
            time.sleep(0.3)
        assert httpx.get(f"{pair[1].url}/sessions/{made[0]}", headers=AUTH).status_code == 404
        assert _session(pair[1], "python")  # the share is free again
    finally:
        left = set().union(*(p.stop() for p in pair))
    assert not left


async def test_soak_through_haproxy_with_a_replica_killed(cluster: Cluster) -> None:
    """Sessions that reconnect at random through haproxy; one replica SIGKILLed mid-run.
    Every frame arrives exactly once or inside a reported `lost` range, every session is
    usable afterwards, and (the fixtures check) nothing is left running."""
    proxy = Haproxy([r.url.removeprefix("http://") for r in cluster.replicas])
    try:
        soakers = [_Soaker(proxy, i) for i in range(4)]
        await asyncio.gather(*(s.open() for s in soakers))
        runs = asyncio.gather(*(s.run(rounds=12) for s in soakers))
        while sum(s.done for s in soakers) < 12:  # a third of the way
            await asyncio.sleep(0.05)
        await asyncio.to_thread(cluster.kill, 0)
        await asyncio.wait_for(runs, 120)
        for soaker in soakers:
            soaker.check()
    finally:
        proxy.stop()
    for soaker in soakers:
        _delete(cluster.replicas[1], soaker.session_id)


class _Soaker:
    def __init__(self, proxy: Haproxy, n: int) -> None:
        self.proxy = proxy
        self.n = n
        self.random = random.Random(n)
        self.client: Client | None = None
        self.session_id = ""
        self.seqs: list[int] = []  # every seq received, in order, over every socket
        self.lost: list[tuple[int, int]] = []
        self.done = 0
        self.token = f"t{n}-{random.random()}"

    async def open(self) -> None:
        self.client = await _connect_new(self.proxy)
        self.session_id = self.client.session["session_id"]
        await self._execute(f"token = {self.token!r}", "setup")

    async def run(self, rounds: int) -> None:
        for i in range(rounds):
            await self._execute(f"print({i})", f"r{i}")
            self.done += 1
            if self.random.random() < 0.3:
                await self.client.ws.close()
                await self._reattach()
        result = await self._execute("print(token)", "final")
        assert result["output"] == [self.token], f"session {self.n}: state not intact: {result}"
        await self.client.ws.close()

    async def _execute(self, code: str, id: str) -> dict[str, Any]:
        """Run `code` to its result; when the socket drops, reattach, and when the run was
        lost (inside a reported range), run it again."""
        for _ in range(5):
            await self.client.send({"type": "execute_code", "code": code, "id": id})
            try:
                while True:
                    frame = self._note(await self.client.recv(30))
                    if frame.get("type") == "execution_result" and frame.get("id") == id:
                        return frame
            except websockets.ConnectionClosed:
                await self._reattach()
                found = await self._drain_replay(id)
                if found is not None:
                    return found
        raise AssertionError(f"session {self.n}: {id} never finished")

    async def _reattach(self) -> None:
        self.client = await _reconnect(self.proxy, self.session_id, self.seqs[-1] if self.seqs else 0, deadline_s=30)
        self._note(self.client.session)

    async def _drain_replay(self, id: str) -> dict[str, Any] | None:
        found = None
        for _ in range(self.client.session["replayed"]):
            frame = self._note(await self.client.recv(10))
            if frame.get("type") == "execution_result" and frame.get("id") == id:
                found = frame
        return found

    def _note(self, frame: dict[str, Any]) -> dict[str, Any]:
        if frame.get("lost"):
            self.lost.append((frame["lost"]["from_seq"], frame["lost"]["to_seq"]))
        if "seq" in frame:
            self.seqs.append(frame["seq"])
        return frame

    def check(self) -> None:
        assert len(self.seqs) == len(set(self.seqs)), f"session {self.n}: a frame arrived twice"
        assert self.seqs == sorted(self.seqs), f"session {self.n}: frames out of order"
        received = set(self.seqs)
        missing = [s for s in range(1, self.seqs[-1]) if s not in received]
        unreported = [s for s in missing if not any(lo <= s <= hi for lo, hi in self.lost)]
        assert not unreported, f"session {self.n}: seqs missing and not reported lost: {unreported[:10]}"


async def _connect_new(proxy: Haproxy) -> Client:
    ws = await websockets.connect(proxy.ws_url + "/ws?language=ssh", additional_headers=AUTH, open_timeout=60, max_size=2**26)
    client = Client(ws)
    client.session = await client.recv(60)
    assert client.session["type"] == "session", client.session
    return client
