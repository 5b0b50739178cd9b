"""Multipart messages on a plain zmq socket, without the per-call work of pyzmq's helpers.

`send_multipart` and `recv_multipart` combine flags and read RCVMORE through Python enums
(~5 us a message), and an empty NOBLOCK read raises `zmq.Again` (~4 us). The gateway reads
and writes ~10 messages per execute: these do the same with plain ints and frame flags.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send_parts(socket: zmq.Socket, parts: list[bytes]) -> None:
    """Send one multipart message (raises zmq.Again where send_multipart would)."""
    send = socket.send
    for part in parts[:-1]:
        send(part, _SNDMORE)
    send(parts[-1])


def recv_waiting(socket: zmq.Socket) -> list[bytes] | None:
    """The next whole message if one is waiting, else None (never blocks)."""
    if not readable(socket):
        return None
    frame = socket.recv(_NOBLOCK, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = socket.recv(_NOBLOCK, copy=False)
        parts.append(frame.bytes)
    return parts


def readable(socket: zmq.Socket) -> bool:
    return bool(socket.get(_EVENTS) & _POLLIN)


class Reader:
    """Reads a plain zmq socket straight from the event loop's selector.

    pyzmq's asyncio socket makes a future and several callbacks for every read, which cost
    more than deserialising the message. This one watches the socket's FD and reads what
    is waiting without any. zmq's FD is edge-triggered: it says "look at EVENTS", and
    whatever reads EVENTS (a recv, a send on the same socket) may consume the edge. So each
    wake-up reads until nothing waits, and a sender calls `kick()` afterwards. A burst is
    bounded, then the loop gets a turn: a kernel that floods must not starve the others.
    """

    def __init__(self, socket: zmq.Socket, on_message: Callable[[list[bytes]], None], burst: int) -> None:
        self.socket = socket
        self.on_message = on_message
        self.burst = burst
        self._loop = asyncio.get_running_loop()
        self._fd = socket.FD
        self._scheduled = False
        self._loop.add_reader(self._fd, self._drain)

    def kick(self) -> None:
        """After a send on this socket: read what may be waiting behind a consumed edge."""
        if not self._scheduled and self.socket is not None and readable(self.socket):
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def stop(self) -> None:
        """Stop watching (before the socket closes: its FD number may be reused)."""
        if self.socket is not None:
            self._loop.remove_reader(self._fd)
            self.socket = None

    def _drain(self) -> None:
        self._scheduled = False
        for _ in range(self.burst):
            try:
                if self.socket is None or (raw := recv_waiting(self.socket)) is None:
                    return
            except zmq.ZMQError:  # closed under us (the context terminated): nothing to read
                self.stop()
                return
            self.on_message(raw)
        self._scheduled = True  # more may wait, with no edge left to say so
        self._loop.call_soon(self._drain)
