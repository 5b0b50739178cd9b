"""The system calls a kernel may not make: what container runtimes deny by default.

Built once at start-up with libseccomp (through pyseccomp) as a BPF program, which bwrap
installs in the sandbox (`--seccomp FD`) before the kernel runs. Denied calls fail with
EPERM; calls of another architecture's ABI (32-bit x86 on x86-64) kill the caller, which is
libseccomp's default for them, so the filter cannot be stepped around that way.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Each group is something a tenant's code has no business doing.
DENIED = (
    # new namespaces (above all user namespaces, where the kernel would be root) and entering
    # others'; clone's namespace flags are denied below
    "unshare", "setns",
    # mounting, and the new mount API
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
    # io_uring, bpf, perf: large attack surfaces of the host kernel
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
    "userfaultfd",
    # the kernel keyring
    "keyctl", "add_key", "request_key",
    # looking into or steering other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # the host kernel itself: modules, kexec, reboot, swap, clocks, accounting, quotas
    "init_module", "finit_module", "delete_module", "create_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "lookup_dcookie", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
    # raw I/O ports, and file handles that step around path permissions
    "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at",
    # NUMA policy of other processes' memory
    "move_pages", "migrate_pages",
)

# clone with any of these flags makes a namespace: CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS,
# NEWIPC, NEWUSER, NEWPID, NEWNET.
_CLONE_NAMESPACES = (0x80, 0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def write_filter(path: Path) -> str | None:
    """Write the filter as BPF to `path`; None, or what went wrong (no libseccomp)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # OSError: libseccomp.so.2 itself is missing
        return f"no seccomp filter: libseccomp cannot be loaded ({exc})"
    try:
        rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        deny = seccomp.ERRNO(errno.EPERM)
        for name in DENIED:
            try:
                rules.add_rule(deny, name)
            except (RuntimeError, ValueError, OSError):
                log.debug("seccomp: no system call %s on this architecture", name)
        for flag in _CLONE_NAMESPACES:
            rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory, out of a filter's reach: "not implemented" makes
        # the C library fall back to clone, whose flags the rules above see.
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        with path.open("wb") as out:
            rules.export_bpf(out)
    except Exception as exc:  # libseccomp's errors come as several types
        return f"no seccomp filter: building it failed ({exc})"
    path.chmod(0o644)
    return None
