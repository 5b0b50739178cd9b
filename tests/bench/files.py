"""Row 11: a file into a session's kernel and back out.

Ours: `PUT` and `GET /sessions/{id}/files/...`. The baselines have no files API, so a client
does what Jupyter-based tools do: code that carries the bytes (base64 in the cell) for the
upload, and code that prints them (base64 on stdout) for the download; raw jupyter_client
and Kernel Gateway's channels each run those cells.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx

# The baselines' kernels run in the bench's own directory: the file goes to /tmp, not the checkout.
_PATH = "/tmp/icotes-bench-f.bin"


def _upload_cell(data: bytes) -> str:
    return f"import base64\nopen({_PATH!r}, 'wb').write(base64.b64decode({base64.b64encode(data).decode()!r}))"


_DOWNLOAD_CELL = f"import base64, sys\nsys.stdout.write(base64.b64encode(open({_PATH!r}, 'rb').read()).decode())"


async def _through_code(open_session: Any, data: bytes, rounds: int) -> dict[str, float]:
    up, down = [], []
    session = await open_session()
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            await session.run(_upload_cell(data))
            up.append(time.perf_counter() - started)
            started = time.perf_counter()
            run = await session.run(_DOWNLOAD_CELL)
            text = "".join(run.text)
            down.append(time.perf_counter() - started)
            if len(text) != 4 * ((len(data) + 2) // 3) or base64.b64decode(text) != data:
                # Jupyter Server's iopub rate limit (1 MB/s by default) drops what runs past it.
                return {"upload_s": sorted(up)[len(up) // 2], "download_s": None, "download_delivered_pct": 100 * len(text) * 3 / 4 / len(data)}
    finally:
        await session.close()
    return {"upload_s": sorted(up)[len(up) // 2], "download_s": sorted(down)[len(down) // 2], "download_delivered_pct": 100.0}


async def _through_files(http: httpx.AsyncClient, data: bytes, rounds: int) -> dict[str, float]:
    up, down = [], []
    session_id = (await http.post("/sessions", json={"language": "python"})).json()["id"]
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            assert (await http.put(f"/sessions/{session_id}/files/f.bin", content=data)).status_code == 201
            up.append(time.perf_counter() - started)
            started = time.perf_counter()
            got = (await http.get(f"/sessions/{session_id}/files/f.bin")).content
            down.append(time.perf_counter() - started)
            assert got == data
    finally:
        await http.delete(f"/sessions/{session_id}")
    return {"upload_s": sorted(up)[len(up) // 2], "download_s": sorted(down)[len(down) // 2]}


async def files_rows(http: httpx.AsyncClient, open_raw: Any, open_kg: Any, mib: int, rounds: int) -> dict[str, Any]:
    """`mib` stays under 7: Kernel Gateway's sockets take messages of at most 10 MiB (Tornado's
    default), and the cell carries the file in base64."""
    data = bytes(range(256)) * (mib * 2**20 // 256)
    try:
        return {
            "mib": mib,
            "ours": await _through_files(http, data, rounds),
            "raw": await _through_code(open_raw, data, rounds),
            "kg": await _through_code(open_kg, data, rounds),
        }
    finally:
        Path(_PATH).unlink(missing_ok=True)
