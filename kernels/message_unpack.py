"""Reading kernel messages faster than jupyter_client's defaults, through its own hooks."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


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
