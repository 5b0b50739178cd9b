"""A kernel's files, reached through the kernel protocol: list, download, upload, delete.

Why the protocol, not the kernel's mount namespace: it is the one way that works for every
kernel the gateway runs, local, forked or placed on another host by an engine (no shared
filesystem, no access to its host), and the work is done by the kernel's own process, as its
own uid, inside its own confinement: what is uploaded belongs to that uid, its home's size
limit and file-size limit hold, and the gateway (root, where it confines kernels) never
touches a directory that hostile code controls.

The kernel side is `in_kernel/icotes_files.py`, registered by a Python kernel's warm-up cell
as the comm target `icotes.files`. Each operation is a comm, on the gateway's subshell where
the kernel has one (ipykernel 7), so it runs beside the user's code; its messages are private
routes of the Kernel, never shown to the kernel's Jupyter clients. A transfer moves one chunk
per message, each answered before the next is sent.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Collection
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from . import in_kernel
from .errors import (
    FileConflict, FileNotFound, FileRefused, GatewayError, InvalidPath, KernelBusyTimeout, KernelDied,
    NoFileChannel, StorageFull,
)
from .kernel import DIED, Kernel
from .kernel_requests import subshell_of

TARGET = "icotes.files"
CHUNK = 512 * 1024  # bytes per message, both ways
_ERRORS: dict[str, type[GatewayError]] = {
    "not_found": FileNotFound, "refused": FileRefused, "bad_path": InvalidPath, "is_a_directory": FileConflict,
    "not_a_directory": FileConflict, "not_empty": FileConflict, "full": StorageFull,
}


class Entry(BaseModel):
    """One entry of a directory, as the kernel's side reports it (and as it is checked: the
    kernel runs the user's code, which can answer for it)."""

    name: str = Field(min_length=1, max_length=255)
    type: Literal["file", "directory", "symlink", "other"]
    size: int = Field(ge=0)
    modified: float = Field(ge=0, le=2**33)  # seconds since the epoch, within datetime's reach


_ENTRIES = TypeAdapter(list[Entry])


def _checked(kind: type[BaseModel] | TypeAdapter[Any], value: Any) -> Any:
    try:
        return kind.validate_python(value) if isinstance(kind, TypeAdapter) else kind.model_validate(value)
    except ValidationError:
        raise NoFileChannel("the kernel's file channel answered something malformed") from None


def warm_up_code(loaded: Collection[str]) -> str:
    """The cell that registers the kernel's side; run before the kernel is handed out. Where
    its process has the module `loaded` already (a fork template's), the cell only registers
    it: compiling it, and IPython's reading of a 12 KB cell, cost a kernel ~10 ms."""
    if "icotes_files" in loaded:
        return "__import__('icotes_files').register()"
    return _full_warm_up()


@functools.cache
def _full_warm_up() -> str:
    return f"exec(compile({in_kernel.source('icotes_files')!r}, 'icotes_files', 'exec'), {{'__name__': 'icotes_files'}})"


def check_path(path: str) -> str:
    """`path` as the kernel's side will read it, or a clear refusal before any kernel is asked."""
    if "\0" in path:
        raise InvalidPath("a path cannot hold a NUL character")
    if path.startswith("/"):
        raise InvalidPath(f"{path!r} is absolute; paths are relative to the kernel's home")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidPath(f"{path!r} leaves the kernel's home ('..')")
    if any(len(part.encode()) > 255 for part in parts) or len(path.encode()) > 4096:
        raise InvalidPath("a path component is longer than 255 bytes, or the path than 4096")
    return "/".join(parts)


class _Comm:
    """One operation's comm: opened with the operation, then one message per chunk; each
    message waits for the kernel's answer (and its `idle`, so nothing of it is left over)."""

    def __init__(self, kernel: Kernel, subshell_id: str | None, timeout: float) -> None:
        self.kernel = kernel
        self.subshell_id = subshell_id
        self.timeout = timeout
        self.id = uuid.uuid4().hex
        self.closed = False

    async def open(self, data: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        return await self._ask("comm_open", {"comm_id": self.id, "target_name": TARGET, "data": data})

    async def send(self, data: dict[str, Any], buffers: list[bytes] | None = None) -> tuple[dict[str, Any], list[bytes]]:
        return await self._ask("comm_msg", {"comm_id": self.id, "data": data}, buffers)

    def close(self) -> None:
        """Tell the kernel's side to let go (an upload not finished leaves no file)."""
        if self.closed or self.kernel.is_dead:
            return
        self.closed = True
        msg = self._message("comm_close", {"comm_id": self.id, "data": {}})
        try:
            self.kernel.send("shell", msg)
        except GatewayError:
            pass  # the kernel is gone or not reading: nothing of the transfer outlives it

    def _message(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        msg = self.kernel.client.session.msg(msg_type, content)
        if self.subshell_id is not None:
            msg["header"]["subshell_id"] = self.subshell_id
        return msg

    async def _ask(self, msg_type: str, content: dict[str, Any], buffers: list[bytes] | None = None) -> tuple[dict[str, Any], list[bytes]]:
        if self.closed:
            raise FileConflict("the transfer has ended")
        msg = self._message(msg_type, content)
        if buffers:
            msg["buffers"] = buffers
        msg_id = msg["header"]["msg_id"]
        queue = self.kernel.subscribe(msg_id, private=True)
        try:
            self.kernel.send("shell", msg)
            return await asyncio.wait_for(self._answer(queue), self.timeout)
        except asyncio.TimeoutError:
            self.close()
            raise KernelBusyTimeout(
                f"the kernel did not answer a file request within {self.timeout:g} s"
            ) from None
        finally:
            self.kernel.unsubscribe(msg_id)

    async def _answer(self, queue: asyncio.Queue[dict[str, Any]]) -> tuple[dict[str, Any], list[bytes]]:
        answer: tuple[dict[str, Any], list[bytes]] | None = None
        while True:
            msg = await queue.get()
            if msg is DIED:
                raise KernelDied(self.kernel.exit_reason or "the kernel died")
            kind = msg["msg_type"]
            if kind == "comm_msg":
                answer = (msg["content"].get("data") or {}, [bytes(b) for b in msg.get("buffers") or []])
            elif kind == "comm_close":
                self.closed = True
            elif kind == "status" and msg["content"].get("execution_state") == "idle":
                break
        if answer is None:
            raise NoFileChannel("this kernel has no file channel (its warm-up did not register one)")
        data, buffers = answer
        if "error" in data:
            self.closed = True
            raise _ERRORS.get(data["error"], FileConflict)(data.get("message") or data["error"])
        return data, buffers


class KernelFiles:
    """The files of one kernel's home."""

    def __init__(self, kernel: Kernel, timeout: float) -> None:
        self.kernel = kernel
        self.timeout = timeout

    async def _comm(self) -> _Comm:
        return _Comm(self.kernel, await subshell_of(self.kernel, self.timeout), self.timeout)

    async def listing(self, path: str) -> dict[str, Any]:
        """`path` (as checked) and its entries."""
        comm = await self._comm()
        data, _ = await comm.open({"op": "list", "path": check_path(path)})
        return {"path": check_path(str(data.get("path", ""))), "entries": _checked(_ENTRIES, data.get("entries"))}

    async def delete(self, path: str) -> None:
        await (await self._comm()).open({"op": "delete", "path": _file_path(path)})

    async def download(self, path: str) -> tuple[Entry, AsyncIterator[bytes]]:
        """The file's entry (its size, before any byte is sent), and its bytes."""
        comm = await self._comm()
        data, _ = await comm.open({"op": "download", "path": _file_path(path)})
        entry = _checked(Entry, data.get("info"))
        return entry, self._chunks(comm, entry.size)

    async def _chunks(self, comm: _Comm, size: int) -> AsyncIterator[bytes]:
        try:
            while not comm.closed and size > 0:
                data, buffers = await comm.send({"read": CHUNK})
                for buffer in buffers:
                    yield buffer[:size]  # never more than announced
                    size -= min(len(buffer), size)
                if data.get("eof"):
                    break
        finally:
            comm.close()  # a client that left mid-download: the kernel closes its file

    async def upload(self, path: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Entry:
        """Write `chunks` to `path` (parents made as needed), all or nothing: the file
        appears, whole, only once the last chunk is in."""
        comm = await self._comm()
        await comm.open({"op": "upload", "path": _file_path(path)})
        size, pending = 0, bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise StorageFull(f"the upload is larger than max_upload_bytes ({max_bytes})")
                pending += chunk
                if len(pending) >= CHUNK:
                    await comm.send({}, [bytes(pending)])
                    pending.clear()
            if pending:
                await comm.send({}, [bytes(pending)])
            data, _ = await comm.send({"commit": True})
            return _checked(Entry, data.get("info"))
        finally:
            comm.close()


def _file_path(path: str) -> str:
    checked = check_path(path)
    if not checked:
        raise FileConflict("the home itself is a directory, not a file")
    return checked
