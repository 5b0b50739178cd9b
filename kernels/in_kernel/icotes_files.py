"""The kernel's side of the gateway's file channel (kernels/files.py); run inside an IPython
kernel by its warm-up cell, never imported by the gateway. A forked kernel's template loads
it beforehand (fork_server.py), where `register()` has no kernel yet and does nothing; the
forked kernel's warm-up cell calls `register()` itself.

It registers the comm target `icotes.files`. Each operation is one comm the gateway opens,
on a subshell of its own where the kernel has them, so it runs beside the user's code: the
open message names the operation; a transfer goes on with comm messages, one chunk each,
until the gateway or this side closes it. Every reply is a comm message to the message it
answers: `{"ok": true, ...}` or `{"error": kind, "message": ...}`.

Every path is relative to the kernel's home and is walked one component at a time from an
fd of the home, never following a symbolic link (`O_NOFOLLOW` on each component), so code in
the kernel that swaps a component for a link between two steps gains nothing. The work is
done by the kernel's own process: its uid owns what is written, and its home's size limit
and file-size limit hold.
"""

import errno
import os
import stat
import sys

TARGET = "icotes.files"
CHUNK = 512 * 1024
_HOME = "/nonexistent"  # the kernel's home, set by register(): in a template it is not known yet
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _walk(parts, create=False):
    """An O_PATH fd of the directory `parts` names, under the home."""
    fd = os.open(_HOME, _DIR)
    try:
        for i, name in enumerate(parts):
            try:
                next_fd = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise Refused("not_found", f"{'/'.join(parts[:i + 1])} does not exist")
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened below like any other
                next_fd = os.open(name, _DIR, dir_fd=fd)
            except NotADirectoryError:
                raise _not_a_directory(fd, name, "/".join(parts[:i + 1]))
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _not_a_directory(fd, name, shown):
    mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        return Refused("refused", f"{shown} is a symbolic link; files are never reached through links")
    return Refused("not_a_directory", f"{shown} is not a directory")


def _kind(mode):
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _entry(name, st):
    return {"name": name, "type": _kind(st.st_mode), "size": st.st_size, "modified": st.st_mtime}


def _split(path):
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts or "\0" in path:
        raise Refused("bad_path", f"{path!r} is not a path inside the home")
    return parts


def _list(path):
    fd = _walk(_split(path))
    try:
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    entries = []
    with os.scandir(listing) as it:
        for entry in it:
            try:
                entries.append(_entry(entry.name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                pass  # removed while listed
    os.close(listing)
    return {"path": "/".join(_split(path)), "entries": sorted(entries, key=lambda e: e["name"])}


def _parent(path, create=False):
    parts = _split(path)
    if not parts:
        raise Refused("is_a_directory", "the home itself is a directory")
    return _walk(parts[:-1], create), parts[-1]


def _lstat(fd, name, path):
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        raise Refused("not_found", f"{path} does not exist")


def _open_regular(path):
    """A read fd of the regular file `path`, and its stat."""
    fd, name = _parent(path)
    try:
        st = _lstat(fd, name, path)
        if stat.S_ISDIR(st.st_mode):
            raise Refused("is_a_directory", f"{path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise Refused("refused", f"{path} is a {_kind(st.st_mode)}, not a regular file")
        # O_NONBLOCK: a fifo swapped in meanwhile cannot hang the open; the fstat below
        # sees the swap (another inode) and refuses it.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            file_fd = os.open(name, flags, dir_fd=fd)
        except OSError as exc:
            raise Refused("refused", f"{path} changed while it was opened ({exc.strerror})")
        opened = os.fstat(file_fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(opened.st_mode):
            os.close(file_fd)
            raise Refused("refused", f"{path} changed while it was opened")
        return file_fd, opened
    finally:
        os.close(fd)


def _delete(path):
    fd, name = _parent(path)
    try:
        st = _lstat(fd, name, path)
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise Refused("not_empty", f"{path} is a directory that is not empty")
                raise
        else:
            os.unlink(name, dir_fd=fd)  # a link itself, never what it points to
        return {}
    finally:
        os.close(fd)


class _Download:
    def __init__(self, path):
        self.fd, st = _open_regular(path)
        self.info = _entry(path.rstrip("/").rsplit("/", 1)[-1], st)
        self.left = st.st_size  # what was announced: a file growing meanwhile is cut there

    def chunk(self):
        data = os.read(self.fd, min(CHUNK, self.left))
        self.left -= len(data)
        return data, self.left == 0 or not data

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Upload:
    """Written to an unnamed file (O_TMPFILE) and linked in at the end, so nothing half
    written is ever seen under the name; where the filesystem has no unnamed files, a
    hidden temporary name removed if the upload is not finished."""

    def __init__(self, path):
        self.path = path
        self.dir_fd, self.name = _parent(path, create=True)
        self.temp = self.fd = None
        try:
            self._create(path)
        except BaseException:
            self.close()
            raise
        self.size = 0

    def _create(self, path):
        try:
            st = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise Refused("is_a_directory", f"{path} is a directory")
        if st is not None and not stat.S_ISREG(st.st_mode):
            # Never followed anyway (the rename below replaces a name, not what it points
            # to), but a user who wrote to a link meant its target: say no, plainly.
            raise Refused("refused", f"{path} is a {_kind(st.st_mode)}; only regular files are replaced")
        try:
            self.fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=self.dir_fd)
        except OSError:
            self.temp = f".{self.name}.{os.urandom(6).hex()}.upload"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self.fd = os.open(self.temp, flags, 0o644, dir_fd=self.dir_fd)

    def write(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
            self.size += written

    def commit(self):
        temp = self.temp
        if temp is None:
            temp = f".{self.name}.{os.urandom(6).hex()}.upload"
            os.link(f"/proc/self/fd/{self.fd}", temp, dst_dir_fd=self.dir_fd, follow_symlinks=True)
        self.temp = temp
        os.rename(temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.temp = None
        st = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        return _entry(self.name, st)

    def close(self):
        if self.temp is not None:
            try:
                os.unlink(self.temp, dir_fd=self.dir_fd)
            except OSError:
                pass
            self.temp = None
        for fd in (self.fd, self.dir_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.dir_fd = None


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _error(exc):
    if isinstance(exc, Refused):
        return {"error": exc.kind, "message": str(exc)}
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return {"error": "full", "message": f"the kernel's home has no room for it ({exc.strerror})"}
    if isinstance(exc, OSError):
        return {"error": "os", "message": exc.strerror or str(exc)}
    return {"error": "internal", "message": f"{type(exc).__name__}: {exc}"}


def _reply(comm, fn, close=False):
    """Run `fn` and answer with what it returns (data, buffers), or with its error."""
    try:
        data, buffers = fn()
        comm.send({"ok": True, **data}, buffers=buffers)
    except Exception as exc:  # every error goes back to the gateway, none to the user's output
        comm.send(_error(exc))
        close = True
    if close:
        comm.close()
    return not close


def _opened(comm, msg):
    request = msg["content"]["data"]
    op, path = request.get("op"), str(request.get("path", ""))
    if op == "list":
        _reply(comm, lambda: (_list(path), None), close=True)
    elif op == "delete":
        _reply(comm, lambda: (_delete(path), None), close=True)
    elif op == "download":
        _serve(comm, path, _Download)
    elif op == "upload":
        _serve(comm, path, _Upload)
    else:
        _reply(comm, lambda: _unknown(op), close=True)


def _unknown(op):
    raise Refused("bad_request", f"unknown operation {op!r}")


def _serve(comm, path, kind):
    """A transfer: opened now, then one comm message per chunk until it ends."""
    box = {}

    def start():
        box["it"] = kind(path)
        return ({"info": box["it"].info} if kind is _Download else {}), None

    if not _reply(comm, start):
        return
    transfer = box["it"]

    def on_msg(msg):
        data, buffers = msg["content"]["data"], msg.get("buffers") or []
        if kind is _Download:
            def read():
                chunk, last = transfer.chunk()
                box["last"] = last
                return {"eof": last}, [chunk]
            if not _reply(comm, read, close=False) or box.get("last"):
                comm.close()
                transfer.close()
        elif data.get("commit"):
            _reply(comm, lambda: ({"info": transfer.commit()}, None), close=True)
            transfer.close()
        else:
            def write():
                for buffer in buffers:
                    transfer.write(buffer)
                return {"size": transfer.size}, None
            if not _reply(comm, write):
                transfer.close()

    comm.on_msg(on_msg)
    comm.on_close(lambda msg: transfer.close())


def register():
    """Register the comm target with the running kernel, once, and keep this module in
    sys.modules, out of the user's namespace, so `%reset` does not remove it."""
    global _HOME
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return  # loaded by a fork template: no kernel yet
    manager = shell.kernel.comm_manager
    if TARGET in manager.targets:
        return
    # The home: $HOME, or where the kernel started if it has none (a remote account may not).
    home = os.path.expanduser("~")
    _HOME = os.path.realpath(home if os.path.isdir(home) else os.getcwd())
    manager.register_target(TARGET, _opened)
    if getattr(sys.modules.get("icotes_files"), "register", None) is not register:
        module = type(sys)("icotes_files")
        module.__dict__.update(globals())
        sys.modules["icotes_files"] = module


register()
