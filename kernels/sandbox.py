"""Confinement of each kernel: bubblewrap namespaces, an unprivileged uid, limits.

The kernel command becomes a chain of small exec()s, each doing one thing and then
becoming the next:

    setpriv --pdeathsig KILL (the chain dies with the gateway)
    -> sh (root: enter the cgroups, hand the runtime dir to the kernel's uid)
    -> prlimit (resource limits)
    -> bwrap (namespaces, a read-only view of the interpreter, private /tmp and home)
    -> setpriv (inside: drop to the kernel's uid, no capabilities, no new privileges)
    -> python -m ipykernel_launcher ...

bwrap runs as root where the gateway is root, so it can bind-mount an interpreter that
lives under /root (mode 700) for a kernel uid that could never open it itself; the drop to
that uid happens inside, after the mounts. Without root, bwrap makes a user namespace.

Each mechanism is probed once at start-up; where one is missing the rest still apply, a
warning is logged, and `report()` says what is in force (strict mode refuses instead).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from . import environment, seccomp
from .cgroups import Cgroup, Cgroups, GroupLimits

log = logging.getLogger(__name__)

HOME = "/home/kernel"

# The few files of /etc that Python and its libraries read.
_ETC_FILES = (
    "/etc/ld.so.cache", "/etc/localtime", "/etc/hosts", "/etc/nsswitch.conf",
    "/etc/mime.types", "/etc/ssl", "/etc/ca-certificates", "/etc/fonts", "/etc/matplotlibrc",
)

# Runs right after `setpriv --pdeathsig KILL`: quits if the gateway died before that took
# hold (the one window the death signal cannot cover), enters the cgroups named before "--",
# gives the runtime dir to the kernel's uid, opens the seccomp filter as fd 9 for bwrap,
# then becomes the rest of its arguments. Data is passed as arguments, never spliced into code.
SECCOMP_FD = 9  # POSIX sh redirects single-digit fds only
ENTER = 'parent=$1; dir=$2; owner=$3; filter=$4; shift 4\n' \
    '[ "$PPID" = "$parent" ] || exit 1\n' \
    f'[ -z "$filter" ] || exec {SECCOMP_FD}<"$filter"\n' \
    'while [ "$1" != "--" ]; do echo $$ > "$1"; shift; done; shift\n' \
    '[ -z "$owner" ] || chown -R "$owner" "$dir"\n' \
    'exec "$@"'


class SandboxUnavailable(RuntimeError):
    """Strict mode was asked for, and some mechanism of confinement is missing."""


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class SandboxConfig(BaseModel):
    """The confinement settings: their one set of names, defaults and descriptions. The
    gateway's Settings include these fields as they are (`GATEWAY_MEMORY_LIMIT_BYTES`, ...)."""

    sandbox: str = Field("auto", pattern="^(auto|strict|off)$", description="kernel confinement: auto (what the host allows, with warnings), strict (all or refuse to start), off")
    memory_limit_bytes: int = Field(2 * 2**30, gt=0, description="cgroup memory limit per kernel")
    pids_limit: int = Field(256, gt=0, description="cgroup limit on processes and threads per kernel")
    kernels_memory_bytes: int = Field(
        default_factory=lambda: _host_memory() * 4 // 5, gt=0,
        description="cgroup memory limit on all kernels together (default: 80% of the host's memory)",
    )
    kernels_pids_limit: int = Field(8192, gt=0, description="cgroup limit on processes and threads of all kernels together")
    cpu_weight: int = Field(100, ge=1, le=10000, description="each kernel's CPU share (cgroup cpu.weight; 100 is the default): one kernel's loop gets no more CPU than another kernel")
    address_space_bytes: int = Field(4 * 2**30, gt=0, description="RLIMIT_AS per kernel (an idle kernel maps ~800 MB)")
    cpu_seconds: int = Field(3600, gt=0, description="RLIMIT_CPU soft limit per kernel; the hard limit is 60 s above")
    nproc_limit: int = Field(256, gt=0, description="RLIMIT_NPROC per kernel uid")
    file_size_bytes: int = Field(256 * 2**20, gt=0, description="RLIMIT_FSIZE: the largest file a kernel may write")
    open_files: int = Field(1024, gt=0, description="RLIMIT_NOFILE per kernel")
    tmp_bytes: int = Field(256 * 2**20, gt=0, description="size of each kernel's private /tmp")
    scratch_bytes: int = Field(512 * 2**20, gt=0, description="size of each kernel's private home directory")
    kernel_uid_base: int = Field(61000, ge=1000, description="kernels run as uids from here up (where the gateway is root); give gateways sharing a host distinct ranges")
    kernel_uid_count: int = Field(4000, gt=0, description="...and this many of them")
    kernel_network: bool = Field(False, description="let kernels reach the network (default: isolated)")
    fork_kernels: bool = Field(True, description="start the shipped Python kernel as a fork of a template that has done its imports (fork_server.py); off: every kernel is exec'd")
    kernel_mounts: list[str] = Field(default=[], description="host paths every confined kernel sees read-only, besides its kernelspec's own environment")


@dataclass
class _Probe:
    bwrap: str | None = None
    root: bool = False
    setpriv: str | None = None
    prlimit: str | None = None
    seccomp: Path | None = None  # the filter's BPF, where it works
    problems: list[str] = field(default_factory=list)


class Sandbox:
    def __init__(self, config: SandboxConfig, state_dir: Path) -> None:
        """`state_dir`: where the gateway keeps what its kernels' sandboxes read (root's)."""
        self.config = config
        self.enabled = config.sandbox != "off"
        self.probe = _probe(config, state_dir / "seccomp.bpf") if self.enabled else _Probe()
        limits = GroupLimits(config.kernels_memory_bytes, config.kernels_pids_limit, config.cpu_weight)
        self.cgroups = Cgroups(limits) if self.enabled and self.probe.root else None
        if self.enabled and self.cgroups is not None and self.cgroups.version is None:
            self.probe.problems.append("no writable cgroup memory/pids controllers")
        elif self.enabled and self.cgroups is None:
            self.probe.problems.append("not root: no cgroups and no per-kernel uid")
        for problem in self.probe.problems:
            log.warning("sandbox: %s; running with weaker confinement", problem)
        if config.sandbox == "strict" and self.probe.problems:
            raise SandboxUnavailable("strict sandbox refused: " + "; ".join(self.probe.problems))
        self._free_uids = list(range(config.kernel_uid_base, config.kernel_uid_base + config.kernel_uid_count))

    def report(self) -> dict[str, Any]:
        """The confinement in force, for /health."""
        c, p = self.config, self.probe
        confined = self.enabled and p.bwrap is not None
        return {
            "mode": c.sandbox,
            "namespaces": "bubblewrap" if confined else "none",
            "network": "isolated" if confined and not c.kernel_network else "host",
            "filesystem": "private" if confined else "host",
            "user": "per-kernel uid" if self.enabled and p.root and p.setpriv else
                    "unprivileged" if confined else "gateway's uid",
            "cgroup": self.cgroups.version if self.cgroups else None,
            "memory_limit_bytes": c.memory_limit_bytes if self.cgroups and self.cgroups.version else None,
            "pids_limit": c.pids_limit if self.cgroups and self.cgroups.version else None,
            "all_kernels": {"memory_limit_bytes": c.kernels_memory_bytes, "pids_limit": c.kernels_pids_limit}
            if self.cgroups and self.cgroups.version else None,
            "cpu_weight": c.cpu_weight if self.cgroups and self.cgroups.cpu else None,
            "rlimits": {
                "address_space_bytes": c.address_space_bytes, "cpu_seconds": c.cpu_seconds,
                "nproc": c.nproc_limit, "file_bytes": c.file_size_bytes, "open_files": c.open_files,
            } if self.enabled and p.prlimit else None,
            "seccomp": "filter" if confined and p.seccomp else None,
            "tmp_bytes": c.tmp_bytes if confined else None,
            "scratch_bytes": c.scratch_bytes if confined else None,
            "problems": p.problems,
        }

    def view(self, program: str, needs: Sequence[str] = ()) -> list[str]:
        """bwrap's mounts of what every kernel of `program` sees of the machine: /usr, a few
        files of /etc, its environment, a private /tmp and home (see fork_server.py too)."""
        config = self.config
        args = [
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", "--dev", "/dev",
            # Mounted by bwrap as root: open to the kernel's uid, the only user inside.
            "--perms", "1777", "--size", str(config.tmp_bytes), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(config.scratch_bytes), "--tmpfs", HOME,
            # bwrap would make /etc root-only, hiding the files below from the kernel's uid.
            "--perms", "0755", "--dir", "/etc",
        ]
        if config.kernel_network:
            args.append("--share-net")
        for path in _ETC_FILES + (("/etc/resolv.conf",) if config.kernel_network else ()):
            args += ["--ro-bind-try", path, path]
        # The kernelspec's program and its environment (e.g. a venv and the interpreter it
        # links to under /root), and what the operator adds, read-only where they are.
        for path in [*environment.mounts_for(program), *needs, *config.kernel_mounts]:
            args += [*_traversable_parents(path), "--ro-bind", path, path]
        return args + _font_cache(program)

    def kernel_env(self, program: str) -> dict[str, str]:
        """The variables the sandbox sets for a kernel, over those of its launch."""
        return {
            "HOME": HOME,
            "PATH": f"{os.path.dirname(program)}:/usr/local/bin:/usr/bin:/bin",
            "USER": "kernel",
            "LOGNAME": "kernel",
            "TMPDIR": "/tmp",
            # The kernel's parent is its namespace's init (pid 1); pid 1 turns ipykernel's
            # parent poller off instead of making it quit at once.
            "JPY_PARENT_PID": "1",
            **_pip_settings(self.config.kernel_network),
        }

    def prepare(self, runtime_dir: Path) -> Confinement:
        """The confinement of one kernel: its uid, cgroup and command wrapper."""
        uid = self._free_uids.pop(0) if self.probe.root and self.probe.setpriv and self._free_uids else None
        name = runtime_dir.name
        cgroup = self.cgroups.create(name, self.config.memory_limit_bytes, self.config.pids_limit) if self.cgroups else None
        return Confinement(self, runtime_dir, uid, cgroup)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()

    def _release_uid(self, uid: int) -> None:
        self._free_uids.append(uid)


class Confinement:
    def __init__(self, sandbox: Sandbox, runtime_dir: Path, uid: int | None, cgroup: Cgroup | None) -> None:
        self.sandbox = sandbox
        self.runtime_dir = runtime_dir
        self.uid = uid
        self.cgroup = cgroup

    def wrap(self, cmd: list[str], resource_dir: str | None = None) -> list[str]:
        probe, config = self.sandbox.probe, self.sandbox.config
        chain: list[str] = []
        if probe.setpriv:
            # The whole chain, bwrap included, dies with the gateway, even by SIGKILL
            # (bwrap's --die-with-parent only guards the sandbox against bwrap's death).
            chain += [probe.setpriv, "--pdeathsig", "KILL", "--"]
        owner = f"{self.uid}:{self.uid}" if self.uid is not None else ""
        procs = [str(p) for p in self.cgroup.procs] if self.cgroup else []
        seccomp = str(probe.seccomp) if probe.seccomp else ""
        chain += ["/bin/sh", "-c", ENTER, "sh", str(os.getpid()), str(self.runtime_dir), owner, seccomp, *procs, "--"]
        if probe.prlimit:
            chain += [
                probe.prlimit,
                f"--as={config.address_space_bytes}",
                f"--cpu={config.cpu_seconds}:{config.cpu_seconds + 60}",
                f"--nproc={config.nproc_limit}",
                f"--fsize={config.file_size_bytes}",
                f"--nofile={config.open_files}",
                "--core=0",
                "--",
            ]
        if probe.bwrap:
            # A spec whose arguments name its own folder (a launcher script) needs it too.
            needs = [resource_dir] if resource_dir and any(resource_dir in a for a in cmd[1:]) else []
            chain += self._bwrap(probe.bwrap, environment.resolve_program(cmd[0]), needs)
        if self.uid is not None:
            chain += [
                probe.setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
            ]
        return chain + cmd

    def _bwrap(self, bwrap: str, program: str, needs: list[str]) -> list[str]:
        """bwrap's arguments up to the command: what the kernel sees of the machine."""
        args = [bwrap, *_namespaces(self.sandbox.probe.root)]
        if self.sandbox.probe.seccomp:
            args += ["--seccomp", str(SECCOMP_FD)]
        args += ["--die-with-parent", "--new-session", "--hostname", "kernel", *self.sandbox.view(program, needs)]
        args += [
            *_traversable_parents(str(self.runtime_dir)),
            "--bind", str(self.runtime_dir), str(self.runtime_dir),
            "--chdir", HOME,
        ]
        for key, value in self.sandbox.kernel_env(program).items():
            args += ["--setenv", key, value]
        return [*args, "--"]

    def seal(self) -> None:
        """Take the runtime directory back from the kernel, once it has bound its sockets and
        written its connection file (ipykernel does both before it answers kernel_info).

        It lies on the host's disk, outside the kernel's size-limited mounts: left the
        kernel's, it could fill the disk there. Its sockets stay bound and connectable.
        """
        if self.uid is None:
            return  # the kernel runs as the gateway's own uid: nothing to take back
        for path in [self.runtime_dir, *self.runtime_dir.iterdir()]:
            os.lchown(path, 0, 0)
        os.chmod(self.runtime_dir, 0o711)

    def death_hint(self) -> str | None:
        if self.cgroup is not None and self.cgroup.oom_killed():
            return f"out of memory: the kernel's memory limit is {self.sandbox.config.memory_limit_bytes} bytes"
        return None

    def release(self) -> bool:
        """Free the uid and cgroup once nothing runs in them; False means retry later."""
        if self.cgroup is not None:
            self.cgroup.kill_all()
            if not self.cgroup.remove():
                return False
            self.cgroup = None
        if self.uid is not None:
            self.sandbox._release_uid(self.uid)
            self.uid = None
        return True


def _traversable_parents(path: str) -> list[str]:
    """Create the parents of a mount point traversable: bwrap would make them root-only
    (think /root), and the kernel's uid must pass through them."""
    args = []
    for parent in reversed(Path(path).parents[:-1]):
        if str(parent) not in ("/tmp", HOME):  # our own tmpfs mounts, open already
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _namespaces(root: bool) -> list[str]:
    if root:
        # No user namespace: uid 0 inside would be host root; setpriv drops it instead.
        return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    return ["--unshare-all", "--unshare-user", "--disable-userns"]


def _font_cache(program: str) -> list[str]:
    args = []
    dirs, links = home_font_cache(program)
    for folder in dirs:
        args += ["--perms", "0777", "--dir", folder]
    for link, target in links:
        args += ["--symlink", target, link]
    return args


def home_font_cache(program: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The folders and links that point a kernel's matplotlib cache at its environment's
    prebuilt font list: each kernel starts in an empty home and would otherwise build its
    own (a second or more), and matplotlib wants its cache folder writable, so the folder
    is the kernel's."""
    caches = environment.font_caches(program)
    if not caches:
        return [], []
    folder = f"{HOME}/.cache/matplotlib"
    return [f"{HOME}/.cache", folder], [(f"{folder}/{cache.name}", str(cache)) for cache in caches]


def _pip_settings(network: bool) -> dict[str, str]:
    """`%pip install` with no network fails at once (pip would retry for a minute), saying
    it could not resolve the index's name (pip says so only when it retries, and its first
    retry is immediate); with a network, it installs into the kernel's home, since its
    environment is read-only."""
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    if network:
        env.update(PIP_TARGET=f"{HOME}/.local/pip", PYTHONPATH=f"{HOME}/.local/pip")
    else:
        env.update(PIP_RETRIES="1", PIP_TIMEOUT="3")
    return env


def _probe(config: SandboxConfig, filter_path: Path) -> _Probe:
    probe = _Probe(root=os.geteuid() == 0)
    probe.prlimit = shutil.which("prlimit")
    if probe.prlimit is None:
        probe.problems.append("prlimit not found: no resource limits")
    probe.setpriv = shutil.which("setpriv")
    if probe.setpriv is None:
        probe.problems.append("setpriv (util-linux) not found: kernels run as the gateway's user")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        probe.problems.append("bubblewrap (bwrap) not found: no namespaces, kernels see the host")
    elif not _bwrap_works(bwrap, probe.setpriv if probe.root else None, config.kernel_uid_base):
        probe.problems.append("bubblewrap cannot create namespaces here: kernels see the host")
    else:
        probe.bwrap = bwrap
        problem = seccomp.write_filter(filter_path) or _filter_works(bwrap, probe.root, filter_path)
        if problem:
            probe.problems.append(problem)
        else:
            probe.seccomp = filter_path
    return probe


def _sandboxed(bwrap: str, root: bool, *extra: str) -> list[str]:
    """The least bwrap command line that runs a program of /usr in namespaces."""
    return [
        bwrap, *_namespaces(root), "--die-with-parent",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", *extra,
    ]


def _bwrap_works(bwrap: str, setpriv: str | None, uid: int) -> bool:
    drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if setpriv else []
    return _exit_code(_sandboxed(bwrap, setpriv is not None, *drop, "/usr/bin/true")) == 0


def _filter_works(bwrap: str, root: bool, filter_path: Path) -> str | None:
    """None if, under the filter, a program runs and a user namespace cannot be made."""
    with filter_path.open("rb") as bpf:
        seccomp_args = ("--seccomp", str(bpf.fileno()))
        runs = _exit_code(_sandboxed(bwrap, root, *seccomp_args, "/usr/bin/true"), bpf.fileno())
        escapes = _exit_code(_sandboxed(bwrap, root, *seccomp_args, "/usr/bin/unshare", "-U", "/usr/bin/true"), bpf.fileno())
    if runs != 0:
        return "no seccomp filter: bwrap would not run a program under it"
    if escapes == 0:
        return "no seccomp filter: it did not stop a new user namespace"
    return None


def _exit_code(cmd: list[str], fd: int | None = None) -> int | None:
    try:
        done = subprocess.run(
            cmd, capture_output=True, timeout=10, cwd=tempfile.gettempdir(), pass_fds=(fd,) if fd is not None else (),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode
