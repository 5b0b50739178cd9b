"""A session's files over REST: list, download, upload, delete, in its kernel's home.

The work is the kernel's (kernels/files.py says how and why). Downloads are served so that a
browser never renders them: a kernel can write an HTML page, and it must not run as the
gateway's origin.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from kernels.errors import NoFileChannel
from kernels.files import Entry, KernelFiles, check_path

from .access import principal_of
from .deps import runtime_of

router = APIRouter(prefix="/sessions/{session_id}/files", tags=["files"])

_LANGUAGE = Query(None, description="whose kernel's home: the session's kernel of this language (default: the session's own)")
# Downloads are attachments, never sniffed, and sandboxed if opened anyway.
_DOWNLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}


class FileEntry(BaseModel):
    name: str
    type: str = Field(description="file, directory, symlink or other")
    size: int
    modified: str = Field(description="last modification, ISO 8601")


class FileListing(BaseModel):
    path: str = Field(description="the directory listed, relative to the home ('' is the home)")
    entries: list[FileEntry]


async def _files(request: Request, session_id: str, language: str | None) -> KernelFiles:
    rt = runtime_of(request)
    session = rt.sessions.get(session_id, principal_of(request)).session
    spec_name = rt.languages.spec_for(language) if language else session.spec_name
    if rt.languages.language_of(spec_name) != "python":
        raise NoFileChannel(
            f"files are reached through a session's Python kernel; its {rt.languages.language_of(spec_name)} "
            "kernel has none (ask with ?language=python)"
        )
    session.touch()
    return KernelFiles(await session.kernel_beside(spec_name), rt.settings.file_timeout_s)


def _entry(entry: Entry) -> FileEntry:
    modified = datetime.fromtimestamp(entry.modified, timezone.utc).isoformat()
    return FileEntry(name=entry.name, type=entry.type, size=entry.size, modified=modified)


@router.get("", response_model=FileListing)
async def list_files(
    session_id: str, request: Request,
    path: str = Query("", description="a directory relative to the kernel's home"), language: str | None = _LANGUAGE,
) -> FileListing:
    """The entries of a directory of the kernel's home (symbolic links are listed, never followed)."""
    check_path(path)
    listing = await (await _files(request, session_id, language)).listing(path)
    return FileListing(path=listing["path"], entries=[_entry(e) for e in listing["entries"]])


@router.get("/{path:path}", response_class=StreamingResponse, responses={200: {"content": {"application/octet-stream": {}}}})
async def download_file(session_id: str, path: str, request: Request, language: str | None = _LANGUAGE) -> Response:
    """A file of the kernel's home, streamed, as an attachment."""
    check_path(path)
    info, chunks = await (await _files(request, session_id, language)).download(path)
    media_type = mimetypes.guess_type(info.name)[0] or "application/octet-stream"
    headers = {
        **_DOWNLOAD_HEADERS,
        "Content-Length": str(info.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(info.name)}",
    }
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


@router.put(
    "/{path:path}", response_model=FileEntry, status_code=201,
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def upload_file(session_id: str, path: str, request: Request, language: str | None = _LANGUAGE) -> FileEntry:
    """Write the request body to a file of the kernel's home, replacing it, its parent
    directories made as needed; all or nothing (a cut upload leaves no file)."""
    check_path(path)
    limit = runtime_of(request).settings.max_upload_bytes
    files = await _files(request, session_id, language)
    return _entry(await files.upload(path, _body(request), limit))


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


@router.delete("/{path:path}", status_code=204)
async def delete_file(session_id: str, path: str, request: Request, language: str | None = _LANGUAGE) -> Response:
    """Remove a file, a symbolic link (not what it points to) or an empty directory."""
    check_path(path)
    await (await _files(request, session_id, language)).delete(path)
    return Response(status_code=204)
