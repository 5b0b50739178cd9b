"""Kernels forked from a template that has the imports done (kernels/fork_server.py): each
child starts as a fresh interpreter would, is confined as an exec'd kernel is, and the
template is reachable by the gateway alone and replaced when it dies or its environment
changes. The confinement tests and the fault catalogue (test_faults.py) run against forked
kernels too: the shipped Python kernel is forked by default."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from kernels.environment import default_path

from .conftest import WHOAMI, Client, GatewayServer, connect, processes_of, result_of


def output(frames: list[dict]) -> list[str]:
    result = result_of(frames)
    assert result["status"] == "ok", result
    return result["output"]


def template_of(server: GatewayServer) -> tuple[str, int]:
    """The template's interpreter and the pid of its process (bwrap's child), once up."""
    deadline = time.monotonic() + 60
    while not (forked := server.health()["sandbox"]["forked_kernels"])["templates"]:
        assert forked["possible"], forked
        assert time.monotonic() < deadline, f"no template started: {forked}"
        time.sleep(0.1)
    [(program, template)] = forked["templates"].items()
    [child] = psutil.Process(template["pid"]).children()
    return program, child.pid


async def host_processes(client: Client) -> tuple[psutil.Process, psutil.Process]:
    """The kernel's init and the kernel itself, as the host sees them."""
    connection_file = output(await client.run(WHOAMI))[0]
    found = processes_of(connection_file)
    init = next(p for p in found if p.cmdline()[0] == "icotes-kernel-init")
    kernel = next(p for p in found if "ipykernel_launcher" in p.cmdline())
    return init, kernel


def status_field(text: str, name: str) -> int:
    line = next(line for line in text.splitlines() if line.startswith(name + ":"))
    return int(line.split()[1], 16)


async def test_the_python_kernel_is_forked_with_pandas_and_matplotlib_already_imported(server: GatewayServer) -> None:
    _, template = template_of(server)
    assert psutil.Process(template).num_threads() == 1  # it forks only with one
    languages = {lang["language"]: lang["provisioner"] for lang in httpx.get(f"{server.url}/languages").json()}
    assert languages["python"] == "icotes-forked-provisioner"
    assert languages["bash"] == "icotes-confined-provisioner"  # other specs keep the exec'd launch
    async with connect(server) as client:
        code = (
            "import sys, os\n"
            "print('pandas' in sys.modules, 'matplotlib.pyplot' in sys.modules)\n"
            "print(os.getppid(), open('/proc/1/cmdline').read().split(chr(0))[0])"
        )
        assert output(await client.run(code)) == ["True True", "1 icotes-kernel-init"]
        init, kernel = await host_processes(client)
        assert kernel.ppid() == init.pid
        assert init.ppid() == template  # the double fork: template -> init -> kernel
        frames = await client.run("import pandas, matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()")
        assert any(o.get("data", {}).get("image/png") for o in result_of(frames)["outputs"]), result_of(frames)


async def test_a_forked_kernel_has_a_fresh_interpreters_signals_and_no_inherited_fd(server: GatewayServer) -> None:
    _, template = template_of(server)
    # What an interpreter started with default dispositions ignores (not what this test's
    # own process may have inherited: nohup, a shell's background job).
    fresh_ignored = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    async with connect(server) as client:
        status = output(await client.run("print(open('/proc/self/status').read())"))
        status_text = "\n".join(status)
        assert status_field(status_text, "SigBlk") == 0
        assert status_field(status_text, "SigIgn") == fresh_ignored  # not the template's SIGCHLD
        # A child's exit status reaches it: the template's ignored SIGCHLD would lose it.
        assert output(await client.run("import subprocess\nprint(subprocess.Popen(['sh', '-c', 'exit 7']).wait())")) == ["7"]
        init, kernel = await host_processes(client)

        def open_files(pid: int) -> dict[int, str]:
            return {int(fd.name): os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}

        # Of what the template or the init holds (the gateway's socket, the init's link, the
        # report pipe), the kernel has only /dev/null and its stderr, the pipe the gateway
        # drains (ipykernel moves its stdio to fds of its own).
        stderr = open_files(init.pid)[2]
        held = set(open_files(template).values()) | set(open_files(init.pid).values())
        assert set(open_files(kernel.pid).values()) & held == {"/dev/null", stderr}


async def test_a_forked_kernels_init_holds_nothing_of_the_template_and_may_only_signal(server: GatewayServer) -> None:
    """Once it has forked the kernel, the init exec's perl (icotes_kernel_init.pl): none of
    the template's memory stays mapped in it, and it stays root with CAP_KILL alone and no
    new privileges, holding its link and a pidfd of the kernel besides its stdio."""
    async with connect(server) as client:
        init, kernel = await host_processes(client)
        assert os.path.basename(init.exe()).startswith("perl"), init.exe()
        assert "python" not in Path(f"/proc/{init.pid}/maps").read_text()
        status = Path(f"/proc/{init.pid}/status").read_text()
        assert init.uids().real == init.uids().effective == 0
        assert status_field(status, "CapEff") == status_field(status, "CapPrm") == 1 << 5  # CAP_KILL
        assert status_field(status, "NoNewPrivs") == 1
        fds = sorted(os.readlink(fd) for fd in Path(f"/proc/{init.pid}/fd").iterdir())
        assert fds[:2] == ["/dev/null", "/dev/null"] and "anon_inode:[pidfd]" in fds and len(fds) == 5, fds
        rollup = Path(f"/proc/{init.pid}/smaps_rollup").read_text().splitlines()
        private_kb = int(next(line for line in rollup if line.startswith("Private_Dirty:")).split()[1])
        assert private_kb < 1024, rollup  # a Python init kept ~2300 kB
        # Its signals reach the kernel: SIGINT sent to the init stops a running cell.
        await client.send({"type": "execute_code", "code": "import time\nprint('go', flush=True)\ntime.sleep(30)", "id": "long"})
        await client.until(lambda f: f.get("type") == "output" and "go" in f["output"].get("text", ""), 30)
        init.send_signal(signal.SIGINT)
        frames = await client.until(lambda f: f.get("type") == "execution_result" and f.get("id") == "long", 10)
        assert frames[-1]["status"] == "interrupted", frames[-1]


async def test_a_forked_kernel_collects_garbage_and_its_debugger_knows_the_library_modules(server: GatewayServer) -> None:
    """The template runs without the collector and hands ipykernel a snapshot of its modules
    (icotes_fork_child.snapshot_modules): a kernel has the collector back, and its debugger's
    list of library files (what "just my code" skips) is the modules' own."""
    async with connect(server) as client:
        code = (
            "import gc, sys\n"
            "before = gc.get_stats()[0]['collections']\n"
            "for _ in range(20000):\n"
            "    c = {}; c['me'] = c\n"  # cycles only the collector frees, made without asking it
            "print(gc.isenabled(), gc.get_stats()[0]['collections'] > before)\n"
            "files = get_ipython().kernel._kernel_modules\n"
            "print(sys.modules['pandas'].__file__ in files, sys.modules['ipykernel.kernelapp'].__file__ in files)\n"
            "print(all(isinstance(f, str) for f in files), len(files) > 500)"
        )
        assert output(await client.run(code)) == ["True True", "True True", "True True"]


async def test_forked_kernels_each_have_their_own_connection_file_and_flags(server: GatewayServer) -> None:
    """The template parses a command line's shape once (icotes_fork_ahead.py), and a kernel
    takes a copy: each still gets its own connection file and the flags the gateway gave it."""
    code = (
        "import sys\n"
        "from ipykernel.kernelapp import IPKernelApp\n"
        "app = IPKernelApp.instance()\n"
        "print(app.connection_file == sys.argv[sys.argv.index('-f') + 1], get_ipython().history_manager.hist_file)\n"
        "print(app.connection_file, 'parse_command_line' in vars(app))"
    )
    files = []
    for _ in range(2):
        async with connect(server) as client:
            first, second = output(await client.run(code))
            assert first == "True :memory:"
            file, patched = second.split()
            assert patched == "False"  # the kernel's app is left as traitlets made it
            files.append(file)
    assert files[0] != files[1]


# What a kernel's shell is, and what it took from its process, which the template's shell
# (icotes_fork_ahead.py) took from the template's and a kernel gives it again.
SHELL = (
    "import os, sys\n"
    "from datetime import datetime\n"
    "from ipykernel.kernelapp import IPKernelApp\n"
    "app, shell = IPKernelApp.instance(), get_ipython()\n"
    "print(shell.config is not app.config, shell.kernel is app.kernel, shell.parent is app.kernel, shell.profile_dir is app.profile_dir)\n"
    "print(os.getcwd(), [str(d) for d in _dh], shell.starting_dir, os.environ.get('PAGER'), os.environ.get('TERM'))\n"
    "print(shell._orig_sys_module_state['stdout'] is sys.stdout, os.path.isdir(shell.profile_dir.startup_dir))\n"
    "start = shell.history_manager.get_session_info()[1]\n"
    "made = datetime.fromtimestamp(os.path.getmtime(app.connection_file))\n"
    "print(start >= made.replace(microsecond=0), shell.history_manager.session_number)\n"
    "print([f.__name__ for f in shell.events.callbacks['post_execute']].count('flush_figures'), shell.InteractiveTB is not None)"
)
DRAWN = "import matplotlib.pyplot as plt\nplt.plot([1, 2])"  # no show(): drawn after the cell, by the inline backend


def adopted_and_as_fresh(lines: list[str]) -> bool:
    """The SHELL report of a kernel whose shell is as a fresh one's; whether it was the template's."""
    home = os.path.join("/home", "kernel")
    assert lines[0].split()[1:] == ["True", "True", "True"], lines
    assert lines[1] == f"{home} ['{home}'] {home} cat xterm-color", lines
    assert lines[2:] == ["True True", "True 1", "1 True"], lines
    return lines[0].split()[0] == "True"


async def test_a_forked_kernel_adopts_the_templates_shell_as_if_it_made_it(server: GatewayServer) -> None:
    """The template makes the shell once, before it forks (~20 ms and ~3 MB of each kernel's
    start). A kernel takes it as its own: its kernel, profile, cwd, environment, stdio and
    history session, not the template's; figures are drawn after each cell, hooked once."""
    for _ in range(2):  # the second kernel's history session was begun after its connection file
        async with connect(server) as client:
            assert output(await client.run("1")) == []
            assert adopted_and_as_fresh(output(await client.run(SHELL)))
            frames = await client.run(DRAWN)
            assert sum(bool(o.get("data", {}).get("image/png")) for o in result_of(frames)["outputs"]) == 1, result_of(frames)


async def test_forked_kernels_do_not_share_random_seeds(server: GatewayServer) -> None:
    code = "import random, numpy\nprint(random.random(), numpy.random.random())"
    async with connect(server) as one, connect(server) as two:
        first, second = output(await one.run(code))[0].split(), output(await two.run(code))[0].split()
    assert first[0] != second[0] and first[1] != second[1]


async def test_a_forked_kernel_sees_only_its_own_processes_files_and_shared_memory(server: GatewayServer) -> None:
    async with connect(server) as one, connect(server) as two:
        theirs = output(await one.run(WHOAMI))[0]
        await one.run("open('/dev/shm/mine', 'w').write('x'); open('/tmp/mine', 'w').write('x')")
        code = (
            "import os, socket\n"
            "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getpid())\n"
            f"print(os.path.exists({theirs!r}), os.listdir({str(Path(theirs).parent.parent)!r}))\n"
            "print(os.listdir('/dev/shm'), os.path.exists('/tmp/mine'), socket.gethostname())\n"
            "import sys; print(os.listdir('/run/icotes-template'), [p for p in sys.path if 'icotes-template' in p], 'icotes_fork_child' in sys.modules)"
        )
        mine = output(await two.run(WHOAMI))[0]
        processes, files, shared, template = output(await two.run(code))
    pids, own = processes.rsplit(" ", 1)
    assert pids == f"[1, {own}]"  # its init and itself: not the template, not other kernels
    assert files == f"False ['{Path(mine).parent.name}']"
    assert shared == "[] False kernel"
    assert template == "[] [] False"  # the template's program is not the kernel's to read


def test_the_template_listens_on_nothing(server: GatewayServer) -> None:
    """Only the gateway can ask for a fork: the template's one socket is half of a pair the
    gateway made, with no name anyone could connect to."""
    _, template = template_of(server)
    sockets = psutil.Process(template).net_connections(kind="all")
    assert sockets and all(s.family == socket.AF_UNIX and not s.laddr and not s.raddr for s in sockets), sockets


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway that starts kernels only when asked: each session's start is seen. Its
    `tweaked` Python kernel is forked too, with a configuration of its own."""
    specs = tmp_path_factory.mktemp("specs")
    (specs / "tweaked").mkdir()
    (specs / "tweaked" / "kernel.json").write_text(json.dumps({
        "argv": [str(default_path() / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--InteractiveShell.cache_size=500"],
        "display_name": "Python, tweaked", "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "icotes-forked-provisioner"}},
    }))
    srv = GatewayServer(pool_size=0, session_grace_s=0, kernel_uid_base=75000, kernelspec_dirs=[str(specs)],
                        languages={"python": "python3", "tweaked": "tweaked"})
    yield srv
    assert not srv.stop()


async def test_a_template_that_dies_or_whose_environment_changes_is_replaced(own_server: GatewayServer) -> None:
    async with connect(own_server) as survivor:
        program, first = template_of(own_server)
        os.kill(first, signal.SIGKILL)
        assert output(await survivor.run("print(1 + 1)")) == ["2"]  # running kernels outlive it
        async with connect(own_server) as client:
            assert output(await client.run("print(open('/proc/1/cmdline').read().split(chr(0))[0])")) == ["icotes-kernel-init"]
        _, second = template_of(own_server)
        assert second != first
        site = next(Path(program).parent.parent.glob("lib/python3*/site-packages"))
        before = site.stat()
        os.utime(site, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # a package came or went
        try:
            async with connect(own_server) as client:
                assert output(await client.run("print(1 + 1)")) == ["2"]
        finally:
            os.utime(site, ns=(before.st_atime_ns, before.st_mtime_ns))
        _, third = template_of(own_server)
        assert third != second
        assert output(await survivor.run("print(1 + 2)")) == ["3"]


async def test_with_forking_off_kernels_are_execd_and_health_says_so() -> None:
    srv = GatewayServer(pool_size=0, session_grace_s=0, fork_kernels=False, kernel_uid_base=76000)
    try:
        forked = srv.health()["sandbox"]["forked_kernels"]
        assert forked["possible"] is False and forked["why_not"] == "fork_kernels is off"
        async with connect(srv) as client:
            init = output(await client.run("print(open('/proc/1/cmdline').read().split(chr(0))[0])"))[0]
        assert init.endswith("bwrap")
        assert srv.health()["sandbox"]["forked_kernels"]["templates"] == {}
    finally:
        assert not srv.stop()


async def test_a_template_that_hangs_is_replaced_and_the_kernel_it_owed_is_execd(own_server: GatewayServer) -> None:
    """A real fault: the template stops answering. The kernel it was asked for is exec'd
    instead (within its start time-out), /health says why, and the next kernel is forked
    from a new template."""
    init_of = "print(open('/proc/1/cmdline').read().split(chr(0))[0])"
    async with connect(own_server):
        pass  # a kernel from the template as it is now (a test before may have changed its environment)
    _, template = template_of(own_server)
    os.kill(template, signal.SIGSTOP)
    try:
        async with connect(own_server) as client:
            assert output(await client.run(init_of))[0].endswith("bwrap")
    finally:
        try:
            os.kill(template, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed as it should be
    problems = own_server.health()["sandbox"]["forked_kernels"]["problems"]
    assert any("did not answer" in why for why in problems.values()), problems
    async with connect(own_server) as client:
        assert output(await client.run(init_of)) == ["icotes-kernel-init"]
    _, second = template_of(own_server)
    assert second != template


async def test_a_kernel_configured_otherwise_makes_its_own_shell(own_server: GatewayServer) -> None:
    """The template's shell is the first command line's: a kernel forked with another
    configuration makes its shell itself, as a fresh kernel does, and the next kernel of the
    first kind still adopts the template's."""
    async with connect(own_server) as client:
        assert adopted_and_as_fresh(output(await client.run(SHELL)))
    async with connect(own_server) as client:
        assert output(await client.run("print(open('/proc/1/cmdline').read().split(chr(0))[0])", language="tweaked")) == ["icotes-kernel-init"]
        assert output(await client.run("print(get_ipython().displayhook.cache_size)", language="tweaked")) == ["500"]
        assert not adopted_and_as_fresh(output(await client.run(SHELL, language="tweaked")))
        frames = await client.run(DRAWN, language="tweaked")
        assert sum(bool(o.get("data", {}).get("image/png")) for o in result_of(frames)["outputs"]) == 1, result_of(frames)
    async with connect(own_server) as client:
        assert adopted_and_as_fresh(output(await client.run(SHELL)))
