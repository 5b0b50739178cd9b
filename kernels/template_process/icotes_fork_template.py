"""The fork template: a Python kernel's imports done once, and kernels forked from them.

Not imported by the gateway: the program the template process runs, in the kernel
environment's own interpreter, inside a bubblewrap view of the machine that every confined
kernel shares (this folder mounted read-only at its edge, hidden from every kernel), as root
with its capabilities kept, in the host's PID namespace. It imports ipykernel and the heavy
libraries, freezes them out of the garbage collector's reach so children share those pages,
then serves the gateway on the one socket it inherited (the fd its argument names, one end
of a SOCK_SEQPACKET pair; nothing else can reach it).

Each request forks twice, the double fork of a PID namespace and its init: the init (B) and
the kernel (C), in icotes_fork_child.py. What is the same for every kernel it does once,
ahead (icotes_fork_ahead.py).
"""

from __future__ import annotations

import array
import gc
import json
import os
import signal
import socket
import sys
import time

from icotes_fork_ahead import parse_ahead, snapshot_modules
from icotes_fork_child import CLONE_NEWPID, check, init, libc

_OWN_PID_NS = -1  # the template's PID namespace, where its children go back to after each fork
CONTROL_FD = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
_MAX_MSG = 1 << 20


def preload(modules: list[str]) -> list[str]:
    """Import what every kernel would; return what failed, for the gateway to report."""
    failed = []
    for name in modules:
        try:
            __import__(name)
        except Exception as exc:  # a library missing from this environment: not fatal
            failed.append(f"{name}: {exc}")
    return failed


def load(modules: dict[str, str]) -> tuple[list[str], list[str]]:
    """Load the gateway's in-kernel modules, sent as source (kernels/in_kernel/): those
    loaded, and what failed."""
    loaded, failed = [], []
    for name, source in modules.items():
        module = type(sys)(name)
        try:
            exec(compile(source, name, "exec"), module.__dict__)
        except Exception as exc:
            failed.append(f"{name}: {exc}")
            continue
        sys.modules[name] = module
        loaded.append(name)
    return loaded, failed


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


# -- the template's loop -------------------------------------------------------------------

def _spawn(job: dict, stderr_fd: int) -> tuple[int, socket.socket]:
    """Fork B straight into a new PID namespace (pid 1 there); its pid and the gateway's end
    of its link. The template's own namespaces never change: unshare(CLONE_NEWPID) moves only
    its next child, and setns puts its children back into its own namespace afterwards."""
    link_ours, link_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    check(libc.unshare(CLONE_NEWPID), "unshare")
    try:
        b = os.fork()
        if b == 0:
            link_theirs.close()
            os.close(CONTROL_FD)
            os.close(_OWN_PID_NS)
            init(job, link_ours, stderr_fd)
    finally:
        check(libc.setns(_OWN_PID_NS, CLONE_NEWPID), "setns")
    link_ours.close()
    return b, link_theirs


def _serve(control: socket.socket, every_job: dict) -> None:
    while True:
        try:
            data, fds = _receive(control)
        except ConnectionError:
            return
        if not data:
            return  # the gateway closed its end
        job: dict = {}
        try:
            job = {**json.loads(data), **every_job}
            parse_ahead(job["argv"])
            if (threads := _threads()) != 1:
                raise RuntimeError(f"the template has {threads} threads; it forks only with one")
            if len(fds) != 1:
                raise RuntimeError("a fork request carries exactly the kernel's stderr")
            pid, link = _spawn(job, fds[0])
            pidfd = os.pidfd_open(pid)
        except Exception as exc:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"request": job.get("request"), "error": f"{type(exc).__name__}: {exc}"}).encode())
            continue
        os.close(fds[0])
        control.sendmsg([json.dumps({"request": job["request"], "pid": pid}).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd, link.fileno()]))])
        os.close(pidfd)
        link.close()


def _receive(control: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = control.recvmsg(_MAX_MSG, socket.CMSG_LEN(4 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def main() -> None:
    global _OWN_PID_NS
    _OWN_PID_NS = os.open("/proc/self/ns/pid", os.O_RDONLY)
    control = socket.socket(fileno=CONTROL_FD)
    config = json.loads(control.recv(_MAX_MSG))
    started = time.monotonic()
    # No collection from here to the fork: one would free objects between the imports' and
    # leave holes that a child's allocations fill, copying the pages on write (gc.freeze's
    # documented recipe). The children enable the collector again.
    gc.disable()
    failed = preload(config["preload"])
    loaded, not_loaded = load(config["modules"])
    snapshot_modules()
    gc.freeze()  # what the children never free stays out of the collector's walks: shared
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # an init that ends is reaped by the kernel itself
    hello = {"ready": True, "threads": _threads(), "failed": failed + not_loaded, "loaded": loaded,
             "seconds": round(time.monotonic() - started, 3)}
    control.send(json.dumps(hello).encode())
    if hello["threads"] == 1:
        _serve(control, {key: config[key] for key in ("seccomp", "init_program", "init_script")})


if __name__ == "__main__":
    main()
