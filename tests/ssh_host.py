"""A real SSH host to place kernels on: Debian's sshd on a free port of 127.0.0.2, with keys
made for the run, and the kernelspec gateway-provisioners' own installer writes for it.

127.0.0.2 answers on loopback but is none of this host's interface addresses, so
gateway-provisioners treats it as remote and goes through SSH (it launches locally for an
address of its own). Kernels there run as an unprivileged account made for the run; the
gateway reaches it with a key whose host key it has pinned (paramiko refuses unknown hosts).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ADDRESS = "127.0.0.2"
USER = "icotes-remote"
SPEC = "ssh_python"


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


class SshHost:
    """sshd on 127.0.0.2, an account to log in as, and a kernelspec naming the host."""

    def __init__(self, kernel_python: str, tools: Path = Path(sys.executable).parent) -> None:
        """`kernel_python`: the interpreter kernels run on the host; `tools`: the bin folder
        of an environment with gateway-provisioners (its spec installer)."""
        self.dir = Path(tempfile.mkdtemp(prefix="icotes-ssh-"))
        self.dir.chmod(0o755)  # the account reads the kernelspec's launcher from here
        self.port = _free_port(ADDRESS)
        self.home = self.dir / "gateway-home"  # the gateway's HOME: its key and known_hosts
        self.logs = self.dir / "kernel-logs"  # where the launcher on the host writes its log
        self._ensure_account()
        self._make_keys()
        self._write_config()
        self._install_spec(kernel_python, tools)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        sshd = ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")]
        self.proc = subprocess.Popen(
            self._with_interpreter_reachable(kernel_python, sshd),
            stdout=subprocess.DEVNULL, stderr=(self.dir / "sshd.log").open("w"),
        )
        self._wait_listening(timeout=10)

    # -- set-up --------------------------------------------------------------------------

    def _ensure_account(self) -> None:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            # "*": no password, and not locked ("!"), which sshd would refuse without PAM
            _run("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--password", "*", USER)
        self.logs.mkdir()
        shutil.chown(self.logs, USER)
        # A home of its own for this run (removed with the rest at stop), as a real host's
        # account has: remote kernels start in it, and the files API works in it.
        self.account_home = self.dir / "account-home"
        self.account_home.mkdir(mode=0o700)
        shutil.chown(self.account_home, USER)
        _run("usermod", "--home", str(self.account_home), USER)

    def _make_keys(self) -> None:
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True, mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519"))
        (self.dir / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
        host_key = (self.dir / "host_key.pub").read_text().split()[:2]
        (ssh / "known_hosts").write_text(f"[{ADDRESS}]:{self.port} {' '.join(host_key)}\n")

    def _write_config(self) -> None:
        (self.dir / "sshd_config").write_text(
            f"ListenAddress {ADDRESS}:{self.port}\n"
            f"HostKey {self.dir / 'host_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            f"AllowUsers {USER}\n"
            "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nX11Forwarding no\nAllowTcpForwarding no\nAllowAgentForwarding no\n"
        )

    def _install_spec(self, kernel_python: str, tools: Path) -> None:
        """The spec as an operator makes it: gateway-provisioners' installer, then argv[0]
        set to the host's kernel interpreter (the installer writes a bare `python`)."""
        _run(
            str(tools / "jupyter-ssh-spec"), "install", f"--prefix={self.dir}", f"--kernel-name={SPEC}",
            f"--remote-hosts={ADDRESS}", "--display-name=Python on an SSH host",
        )
        spec_dir = self.dir / "share" / "jupyter" / "kernels" / SPEC
        spec = json.loads((spec_dir / "kernel.json").read_text())
        spec["argv"][0] = kernel_python
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
        for path in [self.dir / "share", *self.dir.joinpath("share").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.specs = spec_dir.parent

    def _with_interpreter_reachable(self, kernel_python: str, cmd: list[str]) -> list[str]:
        """`cmd` in a mount namespace of its own where the account can reach the kernel
        interpreter, as it could on a host of its own.

        Here the interpreter may live under a directory only root may enter (pyenv in
        /root); in sshd's namespace that directory becomes an empty tmpfs anyone may
        enter, holding only the interpreter's installation. The host is left as it is."""
        prefix = Path(os.path.realpath(kernel_python)).parent.parent
        blocked = next((p for p in reversed(prefix.parents) if not os.stat(p).st_mode & 0o001), None)
        if blocked is None:
            return cmd
        stash = self.dir / "interpreter"
        stash.mkdir()
        script = (
            f"mount --bind {prefix} {stash} && mount -t tmpfs -o mode=0755 tmpfs {blocked} && "
            f"mkdir -p {prefix} && mount --bind {stash} {prefix} && exec \"$@\""
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                socket.create_connection((ADDRESS, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen")

    # -- what a gateway using it needs ---------------------------------------------------

    def gateway_env(self, response_port: int) -> dict[str, str]:
        """gateway-provisioners' settings (read at its import, so given to the process)."""
        return {
            "HOME": str(self.home),
            "GP_SSH_PORT": str(self.port),
            "GP_REMOTE_USER": USER,
            "GP_RESPONSE_IP": "127.0.0.1",
            "GP_RESPONSE_PORT": str(response_port),
            "GP_KERNEL_LOG_DIR": str(self.logs),
        }

    @property
    def account_uid(self) -> int:
        return pwd.getpwnam(USER).pw_uid

    def processes(self) -> list[psutil.Process]:
        """What runs as the account: the launchers and kernels placed on the host."""
        uid = self.account_uid
        found = []
        for proc in psutil.process_iter(["uids", "status"]):
            try:
                if proc.info["uids"].real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, TypeError):
                pass
        return found

    @staticmethod
    def describe(procs: list[psutil.Process]) -> list[str]:
        """Each process as a line a failure message can show: pid, parent, command line."""
        lines = []
        for proc in procs:
            try:
                cmd = proc.cmdline()
                kernel = cmd[cmd.index("--kernel-id") + 1] if "--kernel-id" in cmd else " ".join(cmd)[:120]
                lines.append(f"{proc.pid} (parent {proc.ppid()}): kernel {kernel}")
            except psutil.NoSuchProcess:
                lines.append(f"{proc.pid}: gone")
        return lines

    def wait_no_processes(self, timeout: float = 20) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def stop(self) -> None:
        """Stop sshd, kill whatever the account still runs, remove the account and files."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for proc in self.processes():
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait_no_processes(timeout=5)
        for path in Path(tempfile.gettempdir()).glob("kernel-*.json"):  # the launchers' files
            if path.stat().st_uid == self.account_uid:
                path.unlink()
        subprocess.run(["userdel", USER], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
