"""Kernel messages to and from the wire: jupyter_client's results at about half its cost, and
what may be judged of a message before or after it is parsed.

jupyter_client's Session packs each part with `json.dumps(..., default=..., ...)`, which
builds a JSON encoder per call, and reads bytes through `json.loads`, which guesses their
encoding first. Messages are UTF-8 JSON (the protocol says so): these use one encoder and
one decoder, made once.
"""

from __future__ import annotations

import json
from datetime import datetime
from hmac import compare_digest
from typing import Any

from jupyter_client.adapter import adapt
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from .errors import NotUnicode

_decode = json.JSONDecoder().decode
_encoder = json.JSONEncoder(default=json_default, ensure_ascii=False, allow_nan=False, check_circular=False)
# JSONEncoder.encode builds its C encoder afresh on every call; this is the one it builds.
_c_encode = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, json_default, json.encoder.encode_basestring, None, ": ", ", ", False, False, False,
)


def _encode(obj: Any) -> str:
    return "".join(_c_encode(obj, 0)) if _c_encode else _encoder.encode(obj)


def _loads(part: bytes) -> Any:
    # As jupyter_client reads a part: bytes that are not UTF-8 become U+FFFD. A kernel sends
    # such bytes for `print('\udcff')` (ipykernel encodes with surrogateescape); refusing
    # them would drop the whole message, and every line printed with it.
    return _decode(part.decode("utf8", "replace"))


def unpack(data: bytes | str) -> Any:
    """A header's JSON, its date read by the C ISO 8601 parser.

    jupyter_client turns every ISO 8601 string of a header into a datetime with dateutil,
    pure Python: a fifth of the gateway's CPU per message when output streams. A date this
    cannot read as one with a time zone stays a string.
    """
    obj = _loads(data) if isinstance(data, bytes) else _decode(data)
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
        "metadata": _loads(metadata),
        "content": _loads(content),
        "buffers": [memoryview(b) for b in raw[start + 5:]],
    }
    version = head.get("version")
    if not (isinstance(version, str) and version.startswith("5.")):
        return adapt(msg)
    return msg


def check_unicode(text: str, what: str) -> None:
    """Refuse text that UTF-8 cannot encode (a lone surrogate), before it is queued."""
    if not text.isascii():
        try:
            text.encode("utf8")
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc, f"{what} (at character {exc.start})") from None


def _not_unicode(exc: UnicodeEncodeError, where: str) -> NotUnicode:
    char = exc.object[exc.start]
    return NotUnicode(f"a lone surrogate (U+{ord(char):04X}) in {where} is not Unicode text; no kernel message can carry it")


def serialize(session: Session, msg: dict[str, Any]) -> list[bytes]:
    """What `session.serialize(msg)` returns, for a message of dict parts and no buffers.

    The same JSON (jupyter_client's `json_default` for dates and the rest, no NaN, UTF-8)
    and the same signature. What the one encoder cannot pack goes to jupyter_client, which
    cleans it up and warns, as it would have; so does a part that is not a dict (content
    packed already, or None). Text with a lone surrogate raises NotUnicode, as a client's
    bad input: jupyter_client's UnicodeEncodeError would look like a broken kernel.
    """
    dicts = (msg["header"], msg["parent_header"], msg["metadata"], msg.get("content"))
    if not all(type(part) is dict for part in dicts):
        return _by_jupyter_client(session, msg)
    try:
        parts = [_encode(part).encode("utf8", "surrogateescape") for part in dicts]
    except UnicodeEncodeError as exc:
        raise _not_unicode(exc, "the message") from None
    except (TypeError, ValueError):
        return _by_jupyter_client(session, msg)
    return [_DELIMITER, session.sign(parts), *parts]


def _by_jupyter_client(session: Session, msg: dict[str, Any]) -> list[bytes]:
    try:
        return session.serialize(msg)
    except UnicodeEncodeError as exc:
        raise _not_unicode(exc, "the message") from None
