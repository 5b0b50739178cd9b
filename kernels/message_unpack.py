"""Reading kernel messages off the wire: jupyter_client's result at about half its cost, and
what may be judged of a message before or after it is parsed."""

from __future__ import annotations

import json
from datetime import datetime
from hmac import compare_digest
from typing import Any

from jupyter_client.adapter import adapt
from jupyter_client.session import Session


def unpack(data: bytes | str) -> Any:
    """jupyter_client's JSON unpacking, with a header's date read by the C ISO 8601 parser.

    `Session.deserialize` turns every ISO 8601 string of a header into a datetime with
    dateutil, pure Python: a fifth of the gateway's CPU per message when output streams.
    A header whose date this parses reaches it as a datetime already, which it leaves as it
    is; anything else (a date without a time zone, say) is left to jupyter_client.
    """
    if isinstance(data, bytes):
        data = data.decode("utf8", "replace")
    obj = json.loads(data)
    if isinstance(obj, dict) and "msg_id" in obj and isinstance(obj.get("date"), str):
        try:
            date = datetime.fromisoformat(obj["date"])
        except ValueError:
            return obj
        if date.tzinfo is not None:
            obj["date"] = date
    return obj


_DELIMITER = b"<IDS|MSG>"


def quoted(msg_id: str) -> bytes:
    return f'"{msg_id}"'.encode()


def answers_any(raw: list[bytes], quoted_ids: set[bytes]) -> bool:
    """Whether the raw message's parent header names one of the ids, unparsed. A message
    that merely mentions one is dropped too: only its sender, the kernel, could make one."""
    try:
        parent = raw[raw.index(_DELIMITER) + 3]
    except (ValueError, IndexError):
        return False
    return any(name in parent for name in quoted_ids)


def well_formed(msg: dict[str, Any]) -> bool:
    """What every reader of kernel messages relies on: the parts are objects, the type a string."""
    return (
        isinstance(msg.get("msg_type"), str)
        and all(isinstance(msg.get(part), dict) for part in ("header", "parent_header", "metadata", "content"))
    )


def deserialize(session: Session, raw: list[bytes]) -> dict[str, Any]:
    """What `session.deserialize(session.feed_identities(raw)[1])` returns, at half its cost.

    The same checks (a signature over the four parts, compared in constant time), the same
    parsing (`unpack` for header and parent, JSON for metadata and content); not done: the
    replay history (the gateway keeps none, see kernel.py), the walk of both headers for
    date strings (`unpack` reads their dates), and version adaptation, which changes
    nothing for a kernel that speaks protocol 5 (jupyter_client adapts the others).
    """
    try:
        start = raw.index(_DELIMITER) + 1
    except ValueError:
        raise ValueError("no <IDS|MSG> delimiter") from None
    if len(raw) < start + 5:
        raise TypeError("malformed message: fewer than five parts")
    signature, header, parent, metadata, content = raw[start:start + 5]
    if session.auth is not None:
        check = session.auth.copy()
        for part in (header, parent, metadata, content):
            check.update(part)
        if not signature or not compare_digest(signature, check.hexdigest().encode()):
            raise ValueError("invalid signature")
    head = unpack(header)
    msg = {
        "header": head,
        "msg_id": head["msg_id"],
        "msg_type": head["msg_type"],
        "parent_header": unpack(parent),
        "metadata": json.loads(metadata),
        "content": json.loads(content),
        "buffers": [memoryview(b) for b in raw[start + 5:]],
    }
    version = head.get("version")
    if not (isinstance(version, str) and version.startswith("5.")):
        return adapt(msg)
    return msg
