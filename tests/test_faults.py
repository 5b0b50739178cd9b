"""Hostile code, through the real server: every fault ends with a clear status, the gateway
keeps serving, a bystander session keeps its state, and no process of the faulty kernel stays.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ROOT, WHOAMI, Client, GatewayServer, connect, processes_of, result_of, running, wait_gone

SECRET = "s3cr3t-of-the-gateway"


@pytest.fixture(scope="module", params=["forked", "execd"])
def fault_server(request: pytest.FixtureRequest) -> Iterator[GatewayServer]:
    """The whole catalogue runs twice: on kernels forked from the template (the shipped
    Python kernel's launch) and on kernels exec'd through the confinement chain."""
    os.environ["ICOTES_TEST_SECRET"] = SECRET  # in the gateway's environment, never a kernel's
    try:
        srv = GatewayServer(
            fork_kernels=request.param == "forked",
            pool_size=2,
            session_grace_s=0,
            kernel_uid_base=71000,  # the shared test server runs beside it: its own uids
            memory_limit_bytes=512 * 2**20,
            output_limit=1_000_000,
            interrupt_grace=2,
            file_size_bytes=20 * 2**20,
            scratch_bytes=64 * 2**20,
            tmp_bytes=32 * 2**20,
            nproc_limit=64,
            pids_limit=64,
            kernels_memory_bytes=3 * 2**30,
            kernels_pids_limit=512,
        )
    finally:
        del os.environ["ICOTES_TEST_SECRET"]
    srv.launch = request.param
    yield srv
    left = srv.stop()
    assert not left, f"kernel processes left: {left}"


@pytest.fixture(scope="module")
def sandbox(fault_server: GatewayServer) -> dict[str, Any]:
    return fault_server.health()["sandbox"]


def needs(sandbox: dict[str, Any], **wanted: Any) -> None:
    for key, value in wanted.items():
        if sandbox.get(key) != value:
            pytest.skip(f"needs sandbox {key}={value!r}; this host gives {sandbox.get(key)!r} ({sandbox['problems']})")


@pytest.fixture
async def bystander(fault_server: GatewayServer) -> AsyncIterator[Client]:
    """Another session, busy with its own state while the fault happens next door."""
    async with connect(fault_server) as client:
        await client.run("mine = 'untouched'")
        yield client
        assert result_of(await client.run("print(mine)"))["output"] == ["untouched"]


async def run_fault(server: GatewayServer, code: str, timeout: float = 30) -> dict[str, Any]:
    """Run `code` in a session of its own; return its result once every process is gone."""
    async with connect(server) as client:
        connection_file = result_of(await client.run(WHOAMI, "who"))["output"][0]
        result = result_of(await client.run(code, "fault", wait=timeout + 30, timeout=timeout))
        after = result_of(await client.run("print('alive')", "after"))
        assert after["output"] == ["alive"], "the session did not come back"
    await wait_gone(connection_file)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/health")).json()["status"] == "healthy"
    return result


async def test_the_catalogue_runs_on_kernels_launched_as_its_parameter_says(fault_server: GatewayServer) -> None:
    async with connect(fault_server) as client:
        init = result_of(await client.run("print(open('/proc/1/cmdline').read().split(chr(0))[0])"))["output"]
    assert init == (["icotes-kernel-init"] if fault_server.launch == "forked" else ["/usr/bin/bwrap"])


async def test_memory_bomb_bytearray(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    result = await run_fault(fault_server, "x = bytearray(10**10)")
    assert result["status"] == "error" and result["errors"] == ["MemoryError: "]


async def test_memory_bomb_growing_list(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, cgroup=sandbox.get("cgroup") or "v1")
    code = "hog = []\nwhile True:\n    hog.append(bytearray(2**20))"
    result = await run_fault(fault_server, code)
    assert result["status"] in ("died", "error"), result
    if result["status"] == "died":
        assert any("out of memory" in line for line in result["errors"]), result["errors"]
    else:  # the address-space limit came first
        assert result["errors"][-1].startswith("MemoryError")


async def test_fork_bomb_hits_the_process_limit(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, namespaces="bubblewrap")
    code = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as e:\n"
        "    print('fork failed after', children, type(e).__name__)\n"
    )
    result = await run_fault(fault_server, code)
    assert result["status"] == "ok"
    words = result["output"][0].split()
    assert words[:3] == ["fork", "failed", "after"] and int(words[3]) < 64


async def test_endless_loop_times_out_and_the_session_goes_on(fault_server: GatewayServer, bystander: Client) -> None:
    async with connect(fault_server) as client:
        await client.run("kept = 7")
        started = time.monotonic()
        result = result_of(await client.run("while True: pass", "loop", timeout=1))
        assert result["status"] == "timeout" and time.monotonic() - started < 10
        assert result_of(await client.run("print(kept)"))["output"] == ["7"], "interrupt lost the state"


async def test_time_out_of_code_that_ignores_interrupts(fault_server: GatewayServer, bystander: Client) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(0.1)\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
    )
    async with connect(fault_server) as client:
        await client.run("kept = 1")
        started = time.monotonic()
        result = result_of(await client.run(code, "stubborn", timeout=1))
        assert result["status"] == "timeout"
        assert any("did not stop" in line for line in result["errors"]), result["errors"]
        await client.until(lambda f: f["type"] == "status" and f.get("state_lost") and f["execution_state"] == "idle")
        assert time.monotonic() - started < 15
        after = result_of(await client.run("print('kept' in dir())"))
        assert after["output"] == ["False"]


async def test_os_exit(fault_server: GatewayServer, bystander: Client) -> None:
    result = await run_fault(fault_server, "import os\nos._exit(3)")
    assert result["status"] == "died" and any("exited with code 3" in e for e in result["errors"]), result


async def test_segfault(fault_server: GatewayServer, bystander: Client) -> None:
    result = await run_fault(fault_server, "import ctypes\nctypes.string_at(0)")
    assert result["status"] == "died" and any("SIGSEGV" in e for e in result["errors"]), result


async def test_sigkill_of_the_kernel(fault_server: GatewayServer, bystander: Client) -> None:
    result = await run_fault(fault_server, "import os\nos.kill(os.getpid(), 9)")
    assert result["status"] == "died" and any("SIGKILL" in e for e in result["errors"]), result


async def test_daemon_does_not_outlive_its_kernel(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, namespaces="bubblewrap")
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
        "print('daemonised')\n"
    )
    # run_fault waits for every process of the kernel, the daemon included, to be gone
    assert (await run_fault(fault_server, code))["output"] == ["daemonised"]


async def test_huge_file_is_refused(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, namespaces="bubblewrap")
    code = "with open('big', 'wb') as f:\n    for _ in range(200):\n        f.write(b'x' * 2**20)"
    result = await run_fault(fault_server, code)
    assert result["status"] == "error"
    assert any("File too large" in e or "No space left" in e for e in result["errors"]), result["errors"]


async def test_100_mb_of_output_is_capped(fault_server: GatewayServer, bystander: Client) -> None:
    code = "line = 'x' * 1023\nfor _ in range(100 * 1024):\n    print(line)\nprint('done')"
    result = await run_fault(fault_server, code, timeout=120)
    assert result["status"] == "ok"
    text = "".join(o["text"] for o in result["outputs"] if o["output_type"] == "stream" and o["name"] == "stdout")
    assert len(text) == 1_000_000
    assert any("output limit of 1000000 bytes reached" in e for e in result["errors"])
    dropped = int(result["errors"][-1].split(":")[1].split()[0])
    assert dropped == 100 * 1024 * 1024 + len("done\n") - 1_000_000


async def test_malformed_outputs_from_the_kernel_are_reported_not_fatal(fault_server: GatewayServer, bystander: Client) -> None:
    code = (
        "k = get_ipython().kernel\nparent = k.get_parent()\n"
        "k.session.send(k.iopub_socket, 'display_data', {'data': 'not a dict', 'metadata': {}}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 5}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'execute_result', {}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': ['a', 'b\\n']}, parent=parent)\n"
        "print('after')"
    )
    result = await run_fault(fault_server, code)
    assert result["status"] == "ok" and result["output"] == ["ab", "after"]
    assert [e for e in result["errors"] if "dropped a malformed" in e] == [
        "[gateway] dropped a malformed display_data message from the kernel",
        "[gateway] dropped a malformed stream message from the kernel",
        "[gateway] dropped a malformed execute_result message from the kernel",
    ]
    async with httpx.AsyncClient(base_url=fault_server.url, timeout=60) as http:
        one_shot = (await http.post("/execute", json={"code": code})).json()
    assert one_shot["status"] == "ok" and one_shot["output"] == ["ab", "after"]


async def test_a_flooding_kernel_does_not_starve_its_neighbours(fault_server: GatewayServer, bystander: Client) -> None:
    # Messages straight onto iopub, as fast as the kernel can make them.
    code = (
        "k = get_ipython().kernel\nparent = k.get_parent()\nfor i in range(1_000_000):\n"
        "    k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 'x'}, parent=parent)"
    )
    async with connect(fault_server) as flooder, httpx.AsyncClient(base_url=fault_server.url) as http:
        sid = flooder.session["session_id"]
        await flooder.send({"type": "execute_code", "code": code, "id": "flood"})
        await flooder.until(lambda f: f["type"] == "output")
        for i in range(5):
            # A liveness bound, not a speed claim: ~0.4 s here, and ~10 s each when starved.
            async with asyncio.timeout(5):
                assert result_of(await bystander.run(f"print({i})", f"b{i}"))["output"] == [str(i)]
        # The neighbour was answered while the flood was still going on.
        assert (await http.get(f"/sessions/{sid}")).json()["execution_state"] == "busy"
        await flooder.send({"type": "interrupt"})
        await flooder.until(lambda f: f["type"] == "execution_result" and f.get("id") == "flood", 120)


async def test_filesystem_is_private(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, filesystem="private")
    other = result_of(await bystander.run("import os\nopen('note', 'w').write('x')\nprint(os.path.realpath('note'))"))
    code = (
        "import os\n"
        "def probe(path):\n"
        "    try:\n"
        "        os.listdir(path) if os.path.isdir(path) else open(path).read(1)\n"
        "        return 'readable'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        f"for p in ['/root/.bashrc', '/root/.ssh', {str(ROOT / 'gateway' / 'app.py')!r}, {str(ROOT)!r}, '/etc/shadow', '/proc/1/environ']:\n"
        "    print(p, probe(p))\n"
        "print('home', sorted(os.listdir(os.path.expanduser('~'))))\n"
        "for target in ['/usr/evil', '/etc/evil', '/evil']:\n"
        "    try:\n"
        "        open(target, 'w').write('x')\n"
        "        print(target, 'written')\n"
        "    except OSError as e:\n"
        "        print(target, type(e).__name__)\n"
    )
    result = await run_fault(fault_server, code)
    lines = dict(line.rsplit(" ", 1) for line in result["output"] if not line.startswith("home"))
    for path in ["/root/.bashrc", "/root/.ssh", str(ROOT / "gateway" / "app.py"), str(ROOT), "/etc/shadow", "/proc/1/environ"]:
        assert lines[path] != "readable", (path, lines)
    assert "note" not in next(line for line in result["output"] if line.startswith("home"))
    for target in ["/usr/evil", "/etc/evil", "/evil"]:
        assert lines[target] != "written"
    assert not os.path.exists("/usr/evil") and not os.path.exists("/evil")
    assert other["output"][0].startswith("/home/")


async def test_gateway_secrets_are_not_in_the_kernel(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    code = (
        "import os, glob\n"
        "seen = [k for k, v in os.environ.items() if 's3cr3t' in v or k.startswith('GATEWAY_') or k.startswith('ICOTES')]\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        if b's3cr3t' in open(path, 'rb').read():\n"
        "            seen.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(seen)\n"
    )
    result = await run_fault(fault_server, code)
    assert result["output"] == ["[]"]


async def test_network_is_isolated(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, network="isolated")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed; with no route in the kernel's
    # network namespace the connect fails before any packet is sent.
    code = (
        "import socket\n"
        f"for addr in [('127.0.0.1', {port}), ('127.0.0.1', {fault_server.port}), ('192.0.2.1', 80)]:\n"
        "    try:\n"
        "        socket.create_connection(addr, timeout=3).close()\n"
        "        print(addr[1], 'connected')\n"
        "    except OSError as e:\n"
        "        print(addr[1], type(e).__name__)\n"
    )
    try:
        result = await run_fault(fault_server, code)
    finally:
        listener.close()
    assert not any("connected" in line for line in result["output"]), result["output"]


async def test_kernels_run_as_distinct_unprivileged_users(fault_server: GatewayServer, sandbox: dict) -> None:
    needs(sandbox, user="per-kernel uid")
    code = "import os\nprint(os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    async with connect(fault_server) as one, connect(fault_server) as two:
        uid1, caps1 = result_of(await one.run(code))["output"][0].split()
        uid2, caps2 = result_of(await two.run(code))["output"][0].split()
    assert uid1 != uid2 and "0" not in (uid1, uid2)
    assert int(caps1, 16) == 0 and int(caps2, 16) == 0


async def test_cpu_limit_kills_the_kernel(sandbox: dict) -> None:
    needs(sandbox, namespaces="bubblewrap")
    server = GatewayServer(pool_size=1, cpu_seconds=2, session_grace_s=0)
    try:
        async with connect(server) as client:
            result = result_of(await client.run("while True: pass", timeout=60, wait=60))
        assert result["status"] == "died"
        assert any("SIGXCPU" in e or "SIGKILL" in e for e in result["errors"]), result["errors"]
    finally:
        assert not server.stop()


def test_strict_mode_refuses_to_start_without_confinement() -> None:
    env = dict(os.environ, GATEWAY_SANDBOX="strict", PATH="/nonexistent", GATEWAY_PORT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "strict sandbox refused" in proc.stdout + proc.stderr


async def test_sigkill_of_the_gateway_leaves_no_kernel() -> None:
    server = GatewayServer(pool_size=2)
    async with connect(server) as client:
        connection_file = result_of(await client.run(WHOAMI))["output"][0]
        pids = server.kernel_pids()
        assert processes_of(connection_file)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    deadline = time.monotonic() + 10
    while alive := [p for p in pids if running(p)]:
        assert time.monotonic() < deadline, f"kernel processes outlived the gateway: {alive}"
        await asyncio.sleep(0.1)
    server.stop()
    # What a killed gateway leaves in its cgroups and its runtime directories (connection
    # keys included), the next one sweeps away.
    runtime = Path(connection_file).parent.parent
    assert runtime.name == str(server.proc.pid) and runtime.exists()
    leftovers = [Path(f"/sys/fs/cgroup/{c}/icotes/{server.proc.pid}") for c in ("memory", "pids")]
    next_server = GatewayServer(pool_size=1)
    try:
        assert not any(p.exists() for p in leftovers)
        assert not runtime.exists(), "the killed gateway's runtime directories are still there"
    finally:
        assert not next_server.stop()


async def test_a_kernel_cannot_write_to_its_runtime_directory(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    """It lies on the host's disk, beside the connection file and sockets: the kernel
    wrote 660 MiB there in 8 s when it was the kernel's."""
    needs(sandbox, user="per-kernel uid")
    code = (
        "import os, sys\n"
        "folder = os.path.dirname(sys.argv[sys.argv.index('-f') + 1])\n"
        "for attempt in (lambda: open(os.path.join(folder, 'fill'), 'wb'), lambda: open(sys.argv[sys.argv.index('-f') + 1], 'ab'),\n"
        "                lambda: os.chmod(folder, 0o777), lambda: os.mkdir(os.path.join(folder, 'd'))):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('wrote')\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__)\n"
    )
    result = await run_fault(fault_server, code)
    assert result["output"] == ["PermissionError"] * 4, result["output"]


async def test_kernels_that_cannot_start_fail_requests_fast(sandbox: dict) -> None:
    needs(sandbox, namespaces="bubblewrap")
    # 64 MB of address space is too little for a kernel to start: it hangs without threads
    server = GatewayServer(pool_size=1, address_space_bytes=64 * 2**20, kernel_startup_timeout=3)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            deadline = time.monotonic() + 30
            while True:
                started = time.monotonic()
                response = await http.post("/execute", json={"code": "1"})
                assert response.status_code == 503
                if time.monotonic() - started < 2:  # the pool has given up: no waiting
                    break
                assert time.monotonic() < deadline
            assert "fail to start" in response.json()["detail"]
    finally:
        assert not server.stop()


async def test_a_kernel_dying_between_requests_is_replaced_and_says_so(fault_server: GatewayServer) -> None:
    async with connect(fault_server) as client:
        code = "import os, threading\nthreading.Timer(0.5, lambda: os._exit(1)).start()\nx = 1"
        assert result_of(await client.run(code))["status"] == "ok"
        notice = await client.until(lambda f: f["type"] == "status" and f.get("state_lost") and f["execution_state"] == "idle")
        assert "died" in notice[-1]["message"] and "exited with code 1" in notice[-1]["message"]
        assert result_of(await client.run("print('x' in dir())", "after"))["output"] == ["False"]


async def test_a_reply_the_kernel_never_sends_ends_the_run_and_keeps_the_session(fault_server: GatewayServer) -> None:
    # ipykernel drops the reply when a KeyboardInterrupt lands outside the user's code
    # (a second interrupt while it still handles the first): here it is made to drop it.
    code = (
        "k = get_ipython().kernel\nsend = k.session.send\n"
        "def drop_reply(stream, msg_type, *args, **kwargs):\n"
        "    if msg_type == 'execute_reply':\n"
        "        k.session.send = send\n"
        "        raise KeyboardInterrupt\n"
        "    return send(stream, msg_type, *args, **kwargs)\n"
        "k.session.send = drop_reply\nkept = 'yes'\nprint('ran')"
    )
    async with connect(fault_server) as client:
        result = result_of(await client.run(code, "unanswered", wait=20))
        assert result["status"] == "error" and result["output"] == ["ran"]
        assert result["errors"] == ["Error: the kernel ended this request without replying to it"]
        assert result.get("execution_count") is None
        assert result_of(await client.run("print(kept)", "after"))["output"] == ["yes"]


async def test_a_kernels_own_stdout_and_stderr_never_reach_the_gateways_log(fault_server: GatewayServer, bystander: Client) -> None:
    """Once, a kernel forged uvicorn's log lines, and 50 MiB written with os.write(1, ...)
    grew the gateway's log by 52 MB past output_limit."""
    forged = 'INFO:     127.0.0.1:1 - "POST /execute HTTP/1.1" 200 OK FORGED-BY-A-KERNEL\n'
    code = (
        "import os\n"
        f"line = {forged!r}.encode()\n"
        "for fd in (1, 2):\n"
        "    os.write(fd, line)\n"
        "    for _ in range(10):\n"
        "        os.write(fd, b'x' * 2**20)\n"
        "print('written')\n"
    )
    before = fault_server.log_path.stat().st_size
    result = await run_fault(fault_server, code)
    # ipykernel shows fd-level output as the cell's own: output_limit cuts it there
    assert result["status"] == "ok" and any("output limit" in e for e in result["errors"])
    log = fault_server.log()
    assert "FORGED-BY-A-KERNEL" not in log
    assert len(log.encode()) - before < 100_000, "the gateway's log grew with the kernel's writes"


async def test_a_kernel_that_dies_starting_says_why(tmp_path: Path) -> None:
    (tmp_path / "crashing").mkdir()
    (tmp_path / "crashing" / "kernel.json").write_text(json.dumps({
        "argv": ["/bin/sh", "-c", "echo 'no such module: the-reason-it-gave' >&2; exit 3", "{connection_file}"],
        "display_name": "Crashing", "language": "crashing",
    }))
    server = GatewayServer(pool_size=0, kernelspec_dirs=[str(tmp_path)], languages={"python": "python3", "crashing": "crashing"}, kernel_acquire_timeout=20)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            detail = (await http.post("/execute", json={"code": "1", "language": "crashing"})).json()["detail"]
        assert "exited with code 3" in detail and "the-reason-it-gave" in detail, detail
    finally:
        assert not server.stop()


async def test_kernels_share_the_cpu_and_are_bounded_together(fault_server: GatewayServer, sandbox: dict) -> None:
    """Per-kernel limits add up to more than the host: the gateway's group bounds them all;
    and each kernel is a group of its own with an equal CPU share."""
    needs(sandbox, cgroup=sandbox.get("cgroup") or "v1")
    assert sandbox["all_kernels"] == {"memory_limit_bytes": 3 * 2**30, "pids_limit": 512}
    async with connect(fault_server) as client:
        connection_file = result_of(await client.run(WHOAMI))["output"][0]
        kernel = next(p for p in processes_of(connection_file) if "ipykernel_launcher" in p.cmdline())
        groups = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{kernel.pid}/cgroup").read_text().splitlines())
    mine = f"/icotes/{fault_server.proc.pid}"
    if sandbox["cgroup"] == "v2":
        group = Path("/sys/fs/cgroup" + groups[""])
        assert group.parent == Path(f"/sys/fs/cgroup{mine}")
        assert (group.parent / "memory.max").read_text().strip() == str(3 * 2**30)
        assert (group.parent / "pids.max").read_text().strip() == "512"
        if sandbox["cpu_weight"]:
            assert (group / "cpu.weight").read_text().strip() == "100"
            assert (group.parent / "cpu.weight").read_text().strip() == str(min(10000, 800 * os.cpu_count()))
    else:
        memory = Path("/sys/fs/cgroup/memory" + groups["memory"])
        assert memory.parent == Path(f"/sys/fs/cgroup/memory{mine}")
        assert (memory.parent / "memory.limit_in_bytes").read_text().strip() == str(3 * 2**30)
        assert (Path(f"/sys/fs/cgroup/pids{mine}") / "pids.max").read_text().strip() == "512"
        if sandbox["cpu_weight"]:
            cpu_key = next(k for k in groups if "cpu" in k.split(","))
            cpu = Path("/sys/fs/cgroup/cpu" + groups[cpu_key])  # "cpu,cpuacct" is linked as "cpu"
            assert cpu.parent.name == str(fault_server.proc.pid) and (cpu / "cpu.shares").read_text().strip() == "1024"
            # all kernels together weigh as much as 8 busy tasks a CPU, not as one task
            assert (cpu.parent / "cpu.shares").read_text().strip() == str(1024 * 8 * os.cpu_count())


async def test_the_system_calls_container_runtimes_deny_fail_in_a_kernel(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, seccomp="filter")
    code = (
        "import ctypes, errno, os, subprocess, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(number, *args):\n"
        "    result = libc.syscall(number, *args)\n"
        "    return 'allowed' if result >= 0 else errno.errorcode[ctypes.get_errno()]\n"
        "params = ctypes.create_string_buffer(120)\n"
        # x86-64 numbers: io_uring_setup, bpf, keyctl, perf_event_open, ptrace, unshare(CLONE_NEWUSER)
        "print(call(425, 1, ctypes.byref(params)), call(321, 0, 0, 0), call(250, 0, 0), call(298, 0, 0, -1, -1, 0),\n"
        "      call(101, 16, 1, 0, 0), call(272, 0x10000000))\n"
        "print(subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode != 0)\n"
        "print(subprocess.run(['unshare', '-Ur', 'true'], capture_output=True).returncode != 0)\n"
        # what code does every day still works: threads, processes
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os._exit(7)\n"
        "print(subprocess.run(['true']).returncode, os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))\n"
    )
    if platform.machine() != "x86_64":
        pytest.skip("the system call numbers are x86-64's")
    result = await run_fault(fault_server, code)
    assert result["status"] == "ok", result["errors"]
    assert result["output"] == ["EPERM EPERM EPERM EPERM EPERM EPERM", "True", "True", "0 7"], result["output"]


async def test_code_that_forges_the_end_of_its_run_still_has_a_time_out(fault_server: GatewayServer, bystander: Client) -> None:
    """Code in the kernel holds the key: it can send its own request's `idle` and reply."""
    forge = (
        "k = get_ipython().kernel\n"
        "parent = k.get_parent()\n"
        "reply = {'status': 'ok', 'execution_count': 1, 'user_expressions': {}, 'payload': []}\n"
        "k.session.send(k.shell_stream, 'execute_reply', reply, parent=parent, ident=k._parent_ident['shell'])\n"
        "k.session.send(k.iopub_socket, 'status', {'execution_state': 'idle'}, parent=parent)\n"
        "import time\n"
        "time.sleep(30)\n"
    )
    async with connect(fault_server) as client:
        started = time.monotonic()
        result = result_of(await client.run(forge, "forged", timeout=2, wait=40))
        assert result["status"] == "timeout", result
        assert time.monotonic() - started < 15
        assert result_of(await client.run("print('after')", "after"))["output"] == ["after"]


async def test_malformed_messages_a_kernel_signs_are_dropped_and_the_run_goes_on(fault_server: GatewayServer, bystander: Client) -> None:
    """Once, one such message stopped the session's reader, and the run hung to its time-out."""
    code = (
        "k = get_ipython().kernel\n"
        "parent = k.get_parent()\n"
        "k.session.send(k.iopub_socket, 'status', b'[1, 2]', parent=parent)\n"
        "k.session.send(k.iopub_socket, 'stream', {'name': 'stdlog', 'text': 'forged'}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'display_data', {'data': 7, 'metadata': {}}, parent=parent)\n"
        "print('after the forgery')\n"
    )
    async with connect(fault_server) as client:
        started = time.monotonic()
        result = result_of(await client.run(code, "forged", timeout=30))
        assert time.monotonic() - started < 10
        assert result["status"] == "ok" and result["output"] == ["after the forgery"], result
        assert all(o.get("name") in ("stdout", "stderr") for o in result["outputs"] if o["output_type"] == "stream")
        assert sum("dropped a malformed" in e for e in result["errors"]) == 2, result["errors"]
        assert result_of(await client.run("print('next')", "next"))["output"] == ["next"]


async def test_a_kernel_reads_the_hosts_small_files_but_learns_nothing_of_the_gateway(fault_server: GatewayServer, bystander: Client, sandbox: dict) -> None:
    needs(sandbox, namespaces="bubblewrap")
    code = (
        "import os, ssl, time\n"
        "print(open('/etc/hosts').read().split()[0], os.path.isdir('/etc/ssl'), time.tzname[0] != '')\n"
        "seen = open('/proc/1/cmdline').read() + open('/proc/self/mountinfo').read() + open('/proc/self/cmdline').read()\n"
        f"print({str(ROOT)!r} in seen)\n"
    )
    result = await run_fault(fault_server, code)
    assert result["output"] == ["127.0.0.1 True True", "False"], result
