"""What a kernel forked from the template does before it is a kernel (see icotes_fork_template.py).

    B  forked straight into a new PID namespace, whose pid 1 it is. It unshares mount, IPC,
       UTS (and network) namespaces; mounts the kernel's own /tmp, home, /dev/shm, pts and
       /proc; puts its runtime directory back at its host path, hides every other and the
       template's program; says "ready" on its link to the gateway, which has moved it into
       the kernel's cgroups meanwhile, and waits for "go". Then it forks C and exec's a
       tiny init (icotes_kernel_init.pl), which reaps, forwards signals and writes C's exit
       status on its link. When the gateway goes, the link closes and B exits, which kills
       everything in the namespace.
    C  the kernel: a new session, its rlimits, stdio, signal dispositions and mask as a fresh
       interpreter has them, no inherited fd, a fresh random seed, the kernel's uid with no
       capabilities, no new privileges, the seccomp filter; then IPKernelApp with its argv.

Only the standard library and ipykernel: this runs in the kernel environment's interpreter.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import signal
import socket
import struct
import sys

# mount(2) and unshare(2) flags (linux/mount.h, linux/sched.h)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_SECCOMP, PR_SET_DUMPABLE = 38, 24, 22, 4
PR_SET_MM, PR_SET_MM_MAP = 35, 14
SECCOMP_MODE_FILTER = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CAP_KILL = 5

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _prctl(option: int, arg: int = 0, arg3: int | ctypes.c_void_p = 0) -> None:
    check(libc.prctl(option, ctypes.c_ulong(arg), arg3, 0, 0), f"prctl {option}")


# -- B: the kernel's namespaces and mounts ---------------------------------------------------



def _umount(target: str) -> None:
    check(libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _tmpfs(target: str, size: int, mode: str = "1777") -> None:
    """A fresh tmpfs in place of the template's (and whatever was mounted under it)."""
    _umount(target)
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        import fcntl
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _build_view(job: dict) -> None:
    """The kernel's own mounts, on top of the view the template shares with every kernel."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    runtime, stage, home = job["runtime_dir"], job["stage"], job["home"]
    _mount(runtime, stage, None, MS_BIND | MS_REC)
    _tmpfs("/tmp", job["tmp_bytes"])  # hides every other kernel's runtime directory
    parent = "/"
    for part in runtime.strip("/").split("/"):
        parent = os.path.join(parent, part)
        os.makedirs(parent, mode=0o755, exist_ok=True)
    _mount(stage, runtime, None, MS_BIND | MS_REC)
    _umount(stage)
    _umount(job["program_dir"])  # the template's own program: nothing of the gateway's files
    _tmpfs(home, job["scratch_bytes"])
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['tmp_bytes']},mode=1777")
    _umount("/dev/pts")
    _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    for folder in job["home_dirs"]:
        os.makedirs(folder, mode=0o777, exist_ok=True)
        os.chmod(folder, 0o777)
    for link, target in job["home_links"]:
        os.symlink(target, link)


def _proc() -> None:
    """A /proc of the new PID namespace (only a process inside it can mount that), with
    what bubblewrap also keeps read-only."""
    _umount("/proc")  # the template's, of the host's PID namespace
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"):
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


# -- C: the kernel's process ---------------------------------------------------------------

def _fresh_signals() -> None:
    """Dispositions and mask as a newly started interpreter has them."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _stdio(stderr_fd: int) -> None:
    """/dev/null in and out, the kernel's stderr pipe, and no other fd."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr_fd, 2)
    os.closerange(3, max(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))


_cmdlines: list[ctypes.Array] = []  # kept alive: the kernel's /proc/PID/cmdline points here


def _set_cmdline(argv: list[str]) -> None:
    """Show `argv` in the process table (ps, /proc/PID/cmdline), not the template's: the
    operator sees which kernel this is. PR_SET_MM_MAP takes the whole memory map, of which
    only the arguments change; it needs CAP_SYS_ADMIN, so it is done before the drop."""
    text = b"\0".join(arg.encode() for arg in argv) + b"\0"
    buffer = ctypes.create_string_buffer(text, len(text))
    _cmdlines.append(buffer)
    with open("/proc/self/stat") as stat:
        rest = stat.read().rsplit(")", 1)[1].split()

    def field(number: int) -> int:  # numbered as in proc(5); `rest` starts at field 3
        return int(rest[number - 3])

    libc.sbrk.restype = ctypes.c_void_p
    start = ctypes.addressof(buffer)
    mm_map = struct.pack(
        "11QQII", field(26), field(27), field(45), field(46), field(47), libc.sbrk(0), field(28),
        start, start + len(text), field(50), field(51), 0, 0, 0xFFFFFFFF,  # no auxv, same exe
    )
    argument = ctypes.create_string_buffer(mm_map, len(mm_map))
    check(libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.cast(argument, ctypes.c_void_p), ctypes.c_ulong(len(mm_map)), 0), "prctl PR_SET_MM_MAP")


def _reseed() -> None:
    """Seeds taken at import would be the same in every child (random reseeds itself at
    fork; numpy's global generator does not)."""
    import random
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _limits(rlimits: dict[str, list[int]]) -> None:
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _drop(uid: int | None, seccomp: bytes) -> None:
    """The kernel's uid, no capabilities (the bounding set too), no new privileges, the filter."""
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last_cap + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to another uid: every capability goes
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if seccomp:
        _install_filter(seccomp)


def _install_filter(bpf: bytes) -> None:
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = SockFprog(len(bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p))


def _run_kernel(job: dict, stderr_fd: int) -> None:
    gc.enable()  # the template runs without it, so that its heap has no holes to fill
    os.setsid()
    _stdio(stderr_fd)
    _limits(job["rlimits"])
    _fresh_signals()
    _reseed()
    _set_cmdline(job["cmdline"])
    os.chdir(job["home"])
    os.environ.clear()
    os.environ.update(job["env"])
    _drop(job["uid"], bytes.fromhex(job["seccomp"]))
    sys.argv = ["ipykernel_launcher", *job["argv"]]
    # As `python -m ipykernel_launcher` leaves them: not the template's folder or its module
    # (`__main__`, the template's script, IPython replaces with the user's namespace).
    sys.path[:] = [p for p in sys.path if p != job["program_dir"]]
    sys.modules.pop("icotes_fork_child", None)
    ahead = sys.modules.pop("icotes_fork_ahead")
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp.instance()  # what launch_instance does, with one step between
    if not ahead.initialize(app, job["argv"]):
        ahead.hook_matplotlib()
    app.start()


def _kernel(job: dict, stderr_fd: int) -> None:
    code = 1
    try:
        _run_kernel(job, stderr_fd)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the gateway reads this in its start-failure message
        os.write(2, f"forked kernel failed: {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(code)


# -- B: the namespace's init ---------------------------------------------------------------

def _keep_only_kill() -> None:
    """B stays root (so the kernel's uid can never open its memory) with nothing but the
    right to signal the kernel."""
    header = struct.pack("Ii", 0x20080522, 0)
    data = struct.pack("6I", 1 << CAP_KILL, 1 << CAP_KILL, 0, 0, 0, 0)
    check(libc.capset(header, data), "capset")
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def init(job: dict, link: socket.socket, stderr_fd: int) -> None:
    """B: make the kernel's namespaces and mounts while the gateway moves B into the
    kernel's cgroups, say so, wait for its "go", then fork the kernel and watch it."""
    try:
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(stderr_fd, 2)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the template's SIG_IGN would lose C's status
        _set_cmdline(job["init_cmdline"])
        flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (0 if job["network"] else CLONE_NEWNET)
        check(libc.unshare(flags), "unshare")
        socket.sethostname("kernel")
        if not job["network"]:
            _loopback_up()
        _build_view(job)
        _proc()
    except BaseException as exc:
        link.send(f"error {type(exc).__name__}: {exc}".encode())
        os._exit(1)
    link.send(b"ready")
    try:
        if link.recv(16) != b"go":  # the gateway closed the link: it gave up on this kernel
            os._exit(1)
        kernel = os.fork()
    except BaseException as exc:
        os.write(stderr_fd, f"kernel init failed: {exc}\n".encode())
        os._exit(1)
    if kernel == 0:
        link.close()
        _kernel(job, stderr_fd)
    os.close(stderr_fd)
    _become_init(job, kernel, link)


def _become_init(job: dict, kernel: int, link: socket.socket) -> None:
    """B from here on: the init program, perl running icotes_kernel_init.pl (the template
    has its text), exec'd so that B holds none of the template's pages. It gets the link and
    a pidfd of the kernel, an empty signal mask, CAP_KILL alone and no_new_privs: a root
    exec under no_new_privs keeps no capability it did not have."""
    try:
        pidfd = os.pidfd_open(kernel)
        os.set_inheritable(pidfd, True)
        os.set_inheritable(link.fileno(), True)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        _keep_only_kill()
        name, *rest = job["init_cmdline"]
        os.execv(job["init_program"], [name, "-e", job["init_script"], "--", str(kernel), str(link.fileno()), str(pidfd), *rest])
    except BaseException as exc:
        os.write(2, f"kernel init failed: {type(exc).__name__}: {exc}\n".encode())
        os.kill(kernel, signal.SIGKILL)
        os._exit(1)
