"""How Jupyter messages travel over a kernel's WebSocket, in both of Jupyter's protocols.

- Default ("legacy"): a JSON text frame per message, with a `channel` field; a message with
  binary buffers goes as one binary frame: a big-endian uint32 count N, N uint32 offsets,
  then the JSON of the message and each buffer at its offset.
- `v1.kernel.websocket.jupyter.org`: every message is one binary frame: a little-endian
  uint64 count N, N uint64 offsets, then the channel name, header, parent header, metadata,
  content (each JSON) and the buffers, part i running from offset i to offset i+1.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from jupyter_client.jsonutil import json_default

V1 = "v1.kernel.websocket.jupyter.org"
_PARTS = ("header", "parent_header", "metadata", "content")


class BadFrame(ValueError):
    pass


def _json(value: Any) -> bytes:
    return json.dumps(value, default=json_default).encode()


def encode(msg: dict[str, Any], channel: str, v1: bool) -> str | bytes:
    buffers = [bytes(b) for b in msg.get("buffers") or []]
    if v1:
        parts = [channel.encode(), *(_json(msg.get(k, {})) for k in _PARTS), *buffers]
        return _pack("<Q", 8, parts)
    body = {k: v for k, v in msg.items() if k != "buffers"}
    body["channel"] = channel
    if not buffers:
        return json.dumps(body, default=json_default)
    return _pack("!I", 4, [_json(body), *buffers], count_first=True)


def _pack(fmt: str, width: int, parts: list[bytes], count_first: bool = False) -> bytes:
    """The count, the offsets, then the parts. v1 offsets mark every start and the end;
    the legacy format marks the start of each part only."""
    n = len(parts) if count_first else len(parts) + 1
    position = width * (n + 1)
    offsets = []
    for part in parts:
        offsets.append(position)
        position += len(part)
    if not count_first:
        offsets.append(position)
    head = struct.pack(fmt[0] + fmt[1] * (n + 1), n, *offsets)
    return head + b"".join(parts)


def decode(data: str | bytes, v1: bool) -> tuple[str, dict[str, Any]]:
    """The channel and the message (with `buffers`) of one client frame. A message that
    names no channel is a shell message, as Jupyter Server takes it: jupyter_server's own
    gateway client (nbconvert, papermill) sends them so."""
    try:
        if isinstance(data, str):
            msg = json.loads(data)
            msg.setdefault("buffers", [])
            return msg.pop("channel", None) or "shell", msg
        if v1:
            return _decode_v1(data)
        return _decode_legacy(data)
    except (ValueError, KeyError, struct.error, TypeError, AttributeError) as exc:
        raise BadFrame(f"malformed Jupyter message: {exc}") from None
    except RecursionError:  # JSON nested past the interpreter's stack
        raise BadFrame("malformed Jupyter message: nested too deeply") from None


def _decode_v1(data: bytes) -> tuple[str, dict[str, Any]]:
    (n,) = struct.unpack_from("<Q", data)
    offsets = struct.unpack_from(f"<{n}Q", data, 8)
    parts = [data[offsets[i]:offsets[i + 1]] for i in range(n - 1)]
    channel, fields, buffers = parts[0].decode(), parts[1:5], parts[5:]
    msg = {k: json.loads(v) if v else {} for k, v in zip(_PARTS, fields)}
    msg["buffers"] = buffers
    return channel, msg


def _decode_legacy(data: bytes) -> tuple[str, dict[str, Any]]:
    (n,) = struct.unpack_from("!I", data)
    offsets = [*struct.unpack_from(f"!{n}I", data, 4), len(data)]
    parts = [data[offsets[i]:offsets[i + 1]] for i in range(n)]
    msg = json.loads(parts[0])
    msg["buffers"] = parts[1:]
    return msg.pop("channel", None) or "shell", msg
