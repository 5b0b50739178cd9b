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
    """A header's JSON, its date read by the C ISO 8601 parser.

    jupyter_client turns every ISO 8601 string of a header into a datetime with dateutil,
    pure Python: a fifth of the gateway's CPU per message when output streams. A date this
    cannot read as one with a time zone stays a string.
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
    parsing (`unpack` for header and parent, JSON for metadata and content). Not done: the
    walk of both headers for date strings (`unpack` reads their dates); version adaptation,
    which changes nothing for a kernel that speaks protocol 5 (the others are adapted); and
    the replay history of every signature seen (up to 65536 per kernel, ~11 MB for a long
    session), which guards nothing here: the only peer that can reach a kernel's private
    sockets is the kernel, and it holds the key anyway.
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
