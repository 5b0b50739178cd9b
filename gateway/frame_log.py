"""A session's sent frames, kept for clients that reconnect: bounded, and compact.

Frames are single-line JSON texts numbered 1, 2, 3... The newest are kept as they are; each
full block of older ones is compressed as one piece. A session's frames repeat each other's
keys and shapes, so a block shrinks several-fold, and a log at its bound holds a fraction of
the memory it would. Blocks are unpacked only for a replay.
"""

from __future__ import annotations

import zlib
from array import array
from collections import deque
from dataclasses import dataclass

BLOCK = 64  # frames compressed together


@dataclass
class _Block:
    first_seq: int
    sizes: array[int]  # of each frame, as the byte bound counts them
    packed: bytes

    @classmethod
    def pack(cls, first_seq: int, frames: list[str]) -> _Block:
        packed = zlib.compress("\n".join(frames).encode(), 1)
        return cls(first_seq, array("I", map(len, frames)), packed)

    @property
    def end_seq(self) -> int:  # one past the last
        return self.first_seq + len(self.sizes)

    def frames(self) -> list[str]:
        return zlib.decompress(self.packed).decode().split("\n")


class FrameLog:
    """At most `max_frames` frames and `max_bytes` of them (but always the newest frame);
    when either bound is passed, the oldest go."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.last_seq = 0  # the newest frame's seq
        self.first_seq = 1  # the oldest kept frame's seq (last_seq + 1 when empty)
        self._blocks: deque[_Block] = deque()  # a first block may be partly dropped already
        self._tail: list[str] = []  # the newest frames, after the blocks
        self._bytes = 0  # of the frames kept

    def start_at(self, seq: int) -> None:
        """Number the next frame `seq` (a log taken over from another replica's)."""
        if self.last_seq or self._tail or self._blocks:
            raise ValueError("only an empty log can be renumbered")
        self.last_seq, self.first_seq = seq - 1, seq

    def append(self, text: str) -> int:
        """Keep `text` as the next frame; returns its seq."""
        if "\n" in text:
            raise ValueError("frames must be single-line JSON")
        self.last_seq += 1
        self._tail.append(text)
        self._bytes += len(text)
        if len(self._tail) > BLOCK:  # the newest stays unpacked: it is never dropped
            self._blocks.append(_Block.pack(self.last_seq - BLOCK, self._tail[:BLOCK]))
            del self._tail[:BLOCK]
        while self.first_seq < self.last_seq and (
            self.last_seq - self.first_seq >= self.max_frames or self._bytes > self.max_bytes
        ):
            self._drop_oldest()
        return self.last_seq

    def drop_through(self, seq: int) -> None:
        """Forget every frame up to `seq`: a client said it has them."""
        while self.first_seq <= min(seq, self.last_seq):
            self._drop_oldest()

    def since(self, last_seq: int) -> tuple[list[str], tuple[int, int] | None]:
        """The frames after `last_seq`, and the seqs from there that are no longer kept."""
        start = max(last_seq + 1, self.first_seq)
        lost = (last_seq + 1, self.first_seq - 1) if last_seq + 1 < self.first_seq else None
        frames: list[str] = []
        for block in self._blocks:
            if block.end_seq > start:
                frames.extend(block.frames()[max(0, start - block.first_seq):])
        tail_first = self.last_seq - len(self._tail) + 1
        frames.extend(self._tail[max(0, start - tail_first):])
        return frames, lost

    def _drop_oldest(self) -> None:
        if self._blocks:
            block = self._blocks[0]
            self._bytes -= block.sizes[self.first_seq - block.first_seq]
            if self.first_seq + 1 == block.end_seq:
                self._blocks.popleft()
        else:
            self._bytes -= len(self._tail.pop(0))
        self.first_seq += 1
