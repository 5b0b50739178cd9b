"""Kernels forked from a template process that has done a Python kernel's imports already.

A fresh kernel spends ~0.5 s of CPU importing ipykernel, and a notebook's first `import
pandas, matplotlib.pyplot` another second or more. The template (template_process/, run in the
kernel environment's interpreter) pays that once; each kernel is a fork of it, confined in
namespaces, uid, rlimits, cgroup and seccomp filter as an exec'd kernel is (sandbox.py), and
sharing the imported pages with every other kernel until it writes to them.

One template per interpreter, started on first use and started again when that
interpreter's environment changes (a package installed or removed). The template is reached
only through a socket pair the gateway made: it listens on nothing anyone else can open.

Residue, by design: every child of one template has the same hash seed, and what libraries
read of the environment when imported is what the template saw (BLAS runs one thread).
"""

from __future__ import annotations

import array
import asyncio
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import environment, in_kernel
from .errors import KernelStartFailed
from .kernel_stderr import KernelStderr
from .cgroups import Cgroup
from .sandbox import ENTER, HOME, Sandbox, home_font_cache

log = logging.getLogger(__name__)

# The template's program (run in the kernel environment's interpreter, not imported here),
# and where the template sees it; every kernel unmounts it.
_PROGRAM = Path(__file__).with_name("template_process")
_PROGRAM_DIR = "/run/icotes-template"
_INIT = "icotes_kernel_init.pl"  # its text is sent: a kernel's init runs after the program dir is unmounted
_STAGE = "/run/icotes-stage"  # where a child holds its runtime directory while it mounts /tmp
_START_TIMEOUT_S = 120.0  # the imports take ~4 s of CPU here; far longer on a loaded host
_REPLY_TIMEOUT_S = 5.0  # a fork takes milliseconds; well inside kernel_startup_timeout, so a hung
# template leaves time to exec the kernel instead

# What a Python kernel imports, and what IPKernelApp.initialize() loads lazily, and what
# notebooks import first: loaded once in the template, a dictionary look-up in a kernel.
PRELOAD = [
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.comm",
    "IPython.core.interactiveshell", "IPython.core.completer", "IPython.core.history",
    "IPython.core.debugger", "IPython.core.completerlib", "IPython.core.oinspect",
    "IPython.core.logger", "IPython.extensions.storemagic", "ipykernel.debugger",
    "tornado.gen", "tornado.locks", "tornado.queues", "tornado.platform.asyncio",
    "debugpy", "sqlite3", "pdb", "jedi", "faulthandler", "http.server", "xmlrpc.client",
    "mimetypes", "email.parser", "encodings.idna",
    "psutil", "jupyter_client.localinterfaces",  # the kernel's default ip asks psutil, lazily
    "numpy", "pandas", "matplotlib", "matplotlib.pyplot", "matplotlib_inline.backend_inline",
]

# Set for the template before it imports: libraries that start threads at import (OpenBLAS
# keeps a pool) must not, or the template could not fork safely.
_TEMPLATE_ENV = {
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # debugpy's warning about frozen modules, at import
}

_RLIMITS = {
    "RLIMIT_AS": "address_space_bytes", "RLIMIT_NPROC": "nproc_limit",
    "RLIMIT_FSIZE": "file_size_bytes", "RLIMIT_NOFILE": "open_files",
}


def forkable(argv: list[str]) -> bool:
    """Whether a kernelspec's command is a plain ipykernel, which a template can become."""
    return len(argv) >= 3 and argv[1:3] in (["-m", "ipykernel_launcher"], ["-m", "ipykernel"])


class ForkedProcess:
    """A forked kernel as jupyter_client's local provisioner handles a Popen: poll, wait,
    signal. Watched through a pidfd (no pid reuse can fool it); its exit status comes from
    its namespace's init, over the link that also tells that init when the gateway is gone."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, pidfd: int, link: socket.socket, loaded: tuple[str, ...]) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.link = link
        self.loaded = loaded  # the in-kernel modules (kernels/in_kernel/) its template loaded
        self.returncode: int | None = None

    async def ready(self) -> None:
        """Wait until the init has made the kernel's namespaces and mounts."""
        try:
            said, _ = await _receive(self.link, _REPLY_TIMEOUT_S)
        except TimeoutError:
            said = b"it did not say it was ready"
        if said != b"ready":
            raise KernelStartFailed(f"the forked kernel's namespaces could not be made: {said.decode(errors='replace') or 'its init died'}")

    def go(self) -> None:
        self.link.send(b"go")

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            self.returncode = self._status()
            self.close()
        return self.returncode

    def close(self) -> None:
        """Let go of the process (it is not waited for: the host's init reaps it)."""
        if self.returncode is None:
            self.returncode = -signal.SIGKILL  # given up on: killed, or it will be by its link's end
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.link.close()

    def wait(self) -> int | None:
        return self.poll()

    def _status(self) -> int:
        """`exit N` or `signal N` as Popen says it; the init killed outright says nothing."""
        try:
            said = self.link.recv(64, socket.MSG_DONTWAIT).decode()
        except OSError:
            said = ""
        kind, _, number = said.partition(" ")
        if kind == "exit" and number.isdigit():
            return int(number)
        if kind == "signal" and number.isdigit():
            return -int(number)
        return -signal.SIGKILL

    def send_signal(self, signum: int) -> None:
        if self.returncode is None and self.pidfd >= 0:
            signal.pidfd_send_signal(self.pidfd, signum)  # to the init, which passes it on

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)  # pid 1 gone: the kernel sees every process in it killed

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


@dataclass
class Template:
    program: str
    process: subprocess.Popen[bytes]
    control: socket.socket
    fingerprint: tuple[int, ...]
    hello: dict[str, Any]
    cgroup: Cgroup | None
    stderr: KernelStderr


class ForkServer:
    """The templates of one host's sandbox, one per interpreter, and the forks asked of them."""

    def __init__(self, sandbox: Sandbox, runtime_root: Path) -> None:
        self.sandbox = sandbox
        self.runtime_root = runtime_root
        self._templates: dict[str, Template] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._started = 0
        self._requests = 0
        self.problems: dict[str, str] = {}  # program -> why its kernels are not forked
        self.init_program = shutil.which("perl", path="/usr/bin:/bin")  # runs each kernel's init

    @property
    def possible(self) -> str | None:
        """None if this host can confine a forked kernel as fully as an exec'd one, else why not."""
        probe = self.sandbox.probe
        if not self.sandbox.config.fork_kernels:
            return "fork_kernels is off"
        if not self.sandbox.enabled:
            return "the sandbox is off"
        if not (probe.root and probe.bwrap and probe.setpriv):
            return "forked kernels need root and bubblewrap to be confined"
        if self.init_program is None:
            return "a forked kernel's init is a perl script, and this host has no perl"
        return None

    def report(self) -> dict[str, Any]:
        return {
            "possible": self.possible is None,
            **({"why_not": self.possible} if self.possible else {}),
            "templates": {p: {"pid": t.process.pid, "import_seconds": t.hello.get("seconds"), "failed_imports": t.hello.get("failed", [])}
                          for p, t in self._templates.items()},
            "problems": dict(self.problems),
        }

    async def fork(self, program: str, job: dict[str, Any], stderr_fd: int) -> ForkedProcess:
        """A new kernel from `program`'s template: its init, which makes the kernel's
        namespaces (`ready()`) and forks the kernel itself at `go()`."""
        async with self._locks.setdefault(program, asyncio.Lock()):
            template = await self._template(program)
            self._requests += 1
            request = self._requests
            try:
                template.control.sendmsg([json.dumps({**job, "request": request}).encode()],
                                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [stderr_fd]))])
                answer, fds = await self._answer(template, request)
            except (OSError, TimeoutError) as exc:
                self._forget(program)
                raise KernelStartFailed(f"the kernel template did not answer: {exc or 'timed out'}") from None
        if "pid" not in answer or len(fds) != 2:
            _close(fds)
            if not answer:
                self._forget(program)
            raise KernelStartFailed(f"the kernel template could not fork: {answer.get('error', 'it exited')}")
        link = socket.socket(fileno=fds[1])
        link.setblocking(False)
        return ForkedProcess(answer["pid"], fds[0], link, tuple(template.hello.get("loaded", ())))

    @staticmethod
    async def _answer(template: Template, request: int) -> tuple[dict[str, Any], list[int]]:
        """The template's answer to `request`; a late answer to one given up on (its caller
        was cancelled) is read past, and the kernel it made is killed."""
        while True:
            reply, fds = await _receive(template.control, _REPLY_TIMEOUT_S)
            answer = json.loads(reply or b"{}")
            if not reply or answer.get("request") == request:
                return answer, fds
            if "pid" in answer and fds:
                signal.pidfd_send_signal(fds[0], signal.SIGKILL)
            _close(fds)

    async def _template(self, program: str) -> Template:
        template = self._templates.get(program)
        if template is not None and (template.process.poll() is not None or template.fingerprint != _fingerprint(program)):
            log.info("restarting the kernel template of %s: %s", program,
                     "it exited" if template.process.poll() is not None else "its environment changed")
            self._forget(program)
            template = None
        if template is None:
            template = await self._start(program)
            self._templates[program] = template
        return template

    async def _start(self, program: str) -> Template:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fingerprint = _fingerprint(program)
        self._started += 1
        cgroups, config = self.sandbox.cgroups, self.sandbox.config
        cgroup = cgroups.create(f"template{self._started}", config.memory_limit_bytes, config.kernels_pids_limit) if cgroups else None
        stderr = KernelStderr()  # drained; its tail says why a template died starting
        process = subprocess.Popen(
            self._command(program, theirs.fileno(), cgroup), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr.write_fd, pass_fds=(theirs.fileno(),), env={**_TEMPLATE_ENV, "PATH": "/usr/bin:/bin"}, cwd="/",
        )
        stderr.launched()
        theirs.close()
        ours.setblocking(False)
        try:
            modules = {name: in_kernel.source(name) for name in in_kernel.FOR_TEMPLATES}
            ours.send(json.dumps({"preload": PRELOAD, "modules": modules, "seccomp": self._filter(),
                                  "init_program": self.init_program, "init_script": (_PROGRAM / _INIT).read_text()}).encode())
            try:
                hello, _ = await _receive(ours, _START_TIMEOUT_S)
            except TimeoutError:
                raise KernelStartFailed(f"the kernel template was not ready within {_START_TIMEOUT_S:g} s") from None
            said = json.loads(hello or b"{}")
            if said.get("threads") != 1:
                await asyncio.sleep(0.05)  # what it said on its way out
                raise KernelStartFailed(f"the kernel template did not start: {said or 'it exited'}; it said: {stderr.tail(500)}")
        except BaseException:
            process.kill()
            ours.close()
            stderr.close()
            _release(cgroup)
            raise
        if said["failed"]:
            log.warning("kernel template of %s could not import: %s", program, "; ".join(said["failed"]))
        log.info("kernel template of %s ready in %.1f s (pid %d)", program, said["seconds"], process.pid)
        return Template(program, process, ours, fingerprint, said, cgroup, stderr)

    def _command(self, program: str, control_fd: int, cgroup: Cgroup | None) -> list[str]:
        """The template's chain: it dies with the gateway, is counted in the kernels'
        cgroup, and sees what every kernel sees, as root with its capabilities kept (it
        makes each child's namespaces and mounts), in the host's PID namespace (children
        outlive a restarted template)."""
        probe = self.sandbox.probe
        view = self.sandbox.view(program)
        procs = [str(p) for p in cgroup.procs] if cgroup else []
        return [
            probe.setpriv, "--pdeathsig", "KILL", "--",
            "/bin/sh", "-c", ENTER, "sh", str(os.getpid()), "", "", "", *procs, "--",
            probe.bwrap, "--unshare-ipc", "--unshare-uts", *([] if self.sandbox.config.kernel_network else ["--unshare-net"]),
            "--die-with-parent", "--cap-add", "ALL", *view,
            "--perms", "0755", "--dir", "/run", "--perms", "0700", "--dir", _STAGE,
            "--ro-bind", str(_PROGRAM), _PROGRAM_DIR,
            "--bind", str(self.runtime_root), str(self.runtime_root),
            "--setenv", "HOME", HOME, "--chdir", "/",
            "--", environment.resolve_program(program), f"{_PROGRAM_DIR}/icotes_fork_template.py", str(control_fd),
        ]

    def _filter(self) -> str:
        path = self.sandbox.probe.seccomp
        return path.read_bytes().hex() if path else ""

    def _forget(self, program: str) -> None:
        template = self._templates.pop(program, None)
        if template is not None:
            template.control.close()
            if template.process.poll() is None:
                template.process.kill()
            template.process.wait(timeout=5)
            template.stderr.close()
            _release(template.cgroup)

    def close(self) -> None:
        for program in list(self._templates):
            self._forget(program)


def job_for(sandbox: Sandbox, program: str, runtime_dir: Path, uid: int | None, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """What a template needs to make one confined kernel (see template_process/)."""
    config = sandbox.config
    rlimits = {name: [getattr(config, field)] * 2 for name, field in _RLIMITS.items()}
    rlimits["RLIMIT_CPU"] = [config.cpu_seconds, config.cpu_seconds + 60]
    rlimits["RLIMIT_CORE"] = [0, 0]
    dirs, links = home_font_cache(program)
    connection_file = argv[argv.index("-f") + 1] if "-f" in argv else ""
    return {
        "runtime_dir": str(runtime_dir), "stage": _STAGE, "home": HOME, "program_dir": _PROGRAM_DIR,
        "tmp_bytes": config.tmp_bytes, "scratch_bytes": config.scratch_bytes,
        "network": config.kernel_network, "uid": uid, "rlimits": rlimits,
        "home_dirs": dirs, "home_links": links,
        "env": {**env, **_TEMPLATE_ENV, **sandbox.kernel_env(program)},
        "argv": argv[3:], "cmdline": argv,
        "init_cmdline": ["icotes-kernel-init", "-f", connection_file],
    }


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _release(cgroup: Cgroup | None) -> None:
    """The template's cgroup: whatever is still inside (a namespace maker) goes with it."""
    if cgroup is None:
        return
    for _ in range(20):
        cgroup.kill_all()
        if cgroup.remove():
            return
        time.sleep(0.05)
    log.warning("a kernel template's cgroup is still busy")


def _fingerprint(program: str) -> tuple[int, ...]:
    """Changes when a package is installed into or removed from the program's environment."""
    prefix = environment.prefix_of(program)
    stamps = []
    for site in sorted(prefix.glob("lib/python3*/site-packages")):
        try:
            stamps.append(site.stat().st_mtime_ns)
        except OSError:
            pass
    return tuple(stamps)


async def _receive(sock: socket.socket, timeout: float) -> tuple[bytes, list[int]]:
    """One message and the fds it carries; b"" when the template has gone."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_LEN(8 * 4))
                break
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(sock.fileno(), ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(sock.fileno())
            except ConnectionError:
                return b"", []
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)
