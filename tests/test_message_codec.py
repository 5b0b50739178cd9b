"""Kernel messages to and from the wire: the gateway's own codec against jupyter_client's."""

from __future__ import annotations

import warnings

import pytest
from jupyter_client.session import Session

from kernels import message_codec


def session() -> Session:
    """jupyter_client's own, as it comes: the oracle."""
    return Session(key=b"a key of the kernel's")


def wire(s: Session, msg: dict) -> list[bytes]:
    return [b"routing-id", *s.serialize(msg)]


MESSAGES = [
    ("status", {"execution_state": "idle"}),
    ("execute_result", {"data": {"text/plain": "2", "text/html": "<b>2</b>"}, "metadata": {}, "execution_count": 3}),
    ("stream", {"name": "stdout", "text": "é\n" * 100}),
    ("execute_reply", {"status": "ok", "execution_count": 1, "user_expressions": {}}),
]


@pytest.mark.parametrize(("msg_type", "content"), MESSAGES)
def test_a_message_reads_as_jupyter_client_reads_it(msg_type: str, content: dict) -> None:
    s = session()
    raw = wire(s, s.msg(msg_type, content, parent=s.msg("execute_request", {"code": "1+1"})))
    assert message_codec.deserialize(s, raw) == s.deserialize(s.feed_identities(raw)[1])


def test_binary_buffers_come_through() -> None:
    s = session()
    raw = wire(s, s.msg("comm_msg", {"data": {}})) + [b"\x00\x01buffer"]
    assert bytes(message_codec.deserialize(s, raw)["buffers"][0]) == b"\x00\x01buffer"


def test_an_older_protocol_is_adapted_as_jupyter_client_adapts_it() -> None:
    s = session()
    msg = s.msg("execute_request", {"code": "1"})
    msg["header"]["version"] = "4.1"
    raw = wire(s, msg)
    assert message_codec.deserialize(s, raw) == s.deserialize(s.feed_identities(raw)[1])


@pytest.mark.parametrize("damage", ["altered content", "no signature", "wrong key", "no delimiter", "too few parts"])
def test_a_damaged_or_unsigned_message_is_refused(damage: str) -> None:
    s = session()
    raw = wire(s, s.msg("status", {"execution_state": "idle"}))
    if damage == "altered content":
        raw[-1] = raw[-1].replace(b"idle", b"busy")
    elif damage == "no signature":
        raw[2] = b""
    elif damage == "wrong key":
        raw = wire(Session(key=b"another key"), s.msg("status", {"execution_state": "idle"}))
    elif damage == "no delimiter":
        raw = [part for part in raw if part != b"<IDS|MSG>"]
    else:
        raw = raw[:4]
    with pytest.raises((ValueError, TypeError)):
        message_codec.deserialize(s, raw)


@pytest.mark.parametrize(("msg_type", "content"), [
    ("execute_request", {"code": "print('é\\x00')\n" * 3, "silent": False, "user_expressions": {}}),
    ("input_reply", {"value": "emoji 🐍 and tab\t"}),
    ("comm_msg", {"comm_id": "c", "data": {"numbers": [1, 2.5, None, True]}}),
])
def test_a_message_is_written_as_jupyter_client_writes_it(msg_type: str, content: dict) -> None:
    s = session()
    msg = s.msg(msg_type, content, parent=s.msg("execute_request", {"code": "1"}))
    assert message_codec.serialize(s, msg) == s.serialize(msg)
    raw = wire(s, msg)
    assert message_codec.deserialize(s, raw) == s.deserialize(s.feed_identities(raw)[1])


@pytest.mark.parametrize("content", [{"x": float("nan")}, b'{"packed": "already"}', None])
def test_what_one_encoder_cannot_write_is_written_by_jupyter_client(content: object) -> None:
    s = session()
    msg = s.msg("comm_msg", {})
    msg["content"] = content
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jupyter_client warns of NaN; the point is what is sent
        assert message_codec.serialize(s, msg) == s.serialize(msg)


def test_bytes_that_are_not_utf8_read_as_jupyter_client_reads_them() -> None:
    """ipykernel sends such bytes for `print('\\udcff')`: refused, the message would be lost."""
    s = session()
    msg = s.msg("stream", {}, parent=s.msg("execute_request", {"code": "1"}))
    msg["content"] = b'{"name": "stdout", "text": "a\xffb\\n"}'
    raw = wire(s, msg)
    read = message_codec.deserialize(s, raw)
    assert read == s.deserialize(s.feed_identities(raw)[1]) and read["content"]["text"] == "a\ufffdb\n"
