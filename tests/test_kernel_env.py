"""The kernel environment: notebook code imports pandas and plots with matplotlib, in a
session and one-shot; kernels run an environment of their own, read-only; an operator's
venv anywhere on disk works too."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator

import httpx
import pytest

from kernels.environment import default_path

from .conftest import GatewayServer, connect, result_of

PLOT = "import pandas as pd, matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})"


def png_size(data: bytes) -> tuple[int, int]:
    """Decode a PNG far enough to know it is whole: every chunk's CRC, and the image data
    inflating to exactly one filter byte plus one row of pixels per line."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels * depth // 8)
    return width, height


def check_outputs(outputs: list[dict]) -> None:
    image = next(o for o in outputs if o["output_type"] == "display_data" and "image/png" in o["data"])
    width, height = png_size(base64.b64decode(image["data"]["image/png"]))
    assert width > 200 and height > 150, (width, height)
    table = next(o for o in outputs if o["output_type"] == "execute_result")
    assert "<table" in table["data"]["text/html"] and "<td>x</td>" in table["data"]["text/html"]


async def test_a_dataframe_and_a_plot_in_a_session(server: GatewayServer) -> None:
    async with connect(server) as client:
        frames = await client.run(PLOT, wait=120)
        result = result_of(frames)
        assert result["status"] == "ok", result["errors"]
        check_outputs(result["outputs"])
        check_outputs([f["output"] for f in frames if f["type"] == "output"])  # streamed too


async def test_a_dataframe_and_a_plot_one_shot(http: httpx.AsyncClient) -> None:
    result = (await http.post("/execute", json={"code": PLOT}, timeout=120)).json()
    assert result["status"] == "ok", result["errors"]
    check_outputs(result["outputs"])


async def test_kernels_run_their_own_read_only_environment(http: httpx.AsyncClient) -> None:
    code = (
        "import sys, os, importlib.util\n"
        "print(sys.prefix)\n"
        "print(importlib.util.find_spec('fastapi') is None)\n"  # the gateway's own packages are not there
        "print(os.access(sys.prefix, os.W_OK))\n"
        "import matplotlib\n"
        "cache = os.path.join(matplotlib.get_cachedir(), os.listdir(matplotlib.get_cachedir())[0])\n"
        "print(os.path.islink(cache))\n"  # the environment's prebuilt font list, not one built here
        "import matplotlib.font_manager\n"
        "print(sorted(os.listdir(matplotlib.get_cachedir())) == [os.path.basename(cache)])\n"
    )
    result = (await http.post("/execute", json={"code": code}, timeout=60)).json()
    assert result["status"] == "ok" and result["errors"] == [], result
    assert result["output"] == [str(default_path()), "True", "False", "True", "True"]


async def test_pip_without_network_fails_at_once_saying_why(http: httpx.AsyncClient) -> None:
    code = "import time\nstarted = time.monotonic()\n%pip install --no-cache-dir leftpad-nonexistent\nprint(f'took {time.monotonic() - started:.1f}')"
    result = (await http.post("/execute", json={"code": code, "timeout": 60}, timeout=90)).json()
    text = "\n".join(result["output"] + result["errors"])
    assert "resolve" in text or "connection" in text.lower(), text
    took = float(result["output"][-1].split()[1])
    assert took < 15, f"pip took {took} s to give up"


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """An operator's own venv somewhere on disk, with its kernelspec naming a bare
    `python` (as ipykernel's does), and the packages it shares mounted as an extra path."""
    root = tmp_path_factory.mktemp("operator")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    shared = default_path() / "lib" / "python3.11" / "site-packages"
    site = next((venv / "lib").glob("python3.*")) / "site-packages"
    (site / "shared.pth").write_text(f"{shared}\n")
    spec = venv / "share" / "jupyter" / "kernels" / "ops"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Operator's Python", "language": "python",
    }))
    srv = GatewayServer(
        pool_size=1, session_grace_s=0, kernel_env=str(venv), kernel_mounts=[str(shared)],
        languages={"python": "ops"}, kernel_uid_base=72000,
    )
    yield srv
    assert not srv.stop()


async def test_an_operators_venv_anywhere_on_disk(operator_env: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=operator_env.url, timeout=60) as http:
        languages = (await http.get("/languages")).json()
        assert [(l["language"], l["kernel"]) for l in languages] == [("python", "ops")]
        code = "import sys, numpy\nprint(sys.prefix)\nprint(numpy.__name__)"
        result = (await http.post("/execute", json={"code": code})).json()
    assert result["status"] == "ok", result
    assert result["output"][0].endswith("/operator0/venv") and result["output"][1] == "numpy"
