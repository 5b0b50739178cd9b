"""The replay log on its own: every frame back exactly once and in order, exact bounds, and
compression that actually saves memory."""

from __future__ import annotations

import json

import pytest

from gateway.frame_log import BLOCK, FrameLog


def frame(seq: int, text: str = "") -> str:
    output = {"output_type": "execute_result", "data": {"text/plain": str(seq) + text}, "execution_count": seq}
    return json.dumps({"type": "output", "id": str(seq), "output": output, "seq": seq})


def fill(log: FrameLog, count: int, text: str = "") -> list[str]:
    frames = [frame(seq, text) for seq in range(log.last_seq + 1, log.last_seq + count + 1)]
    for f in frames:
        log.append(f)
    return frames


def seqs(frames: list[str]) -> list[int]:
    return [json.loads(f)["seq"] for f in frames]


@pytest.mark.parametrize("last_seq", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 7, 1000, 1001])
def test_everything_after_last_seq_comes_back_in_order(last_seq: int) -> None:
    log = FrameLog(10_000, 2**30)
    sent = fill(log, 1000)
    frames, lost = log.since(last_seq)
    assert frames == sent[last_seq:] and lost is None


def test_the_frame_bound_is_exact_and_the_gap_reported() -> None:
    log = FrameLog(100, 2**30)
    sent = fill(log, 1000)
    frames, lost = log.since(0)
    assert frames == sent[-100:]
    assert lost == (1, 900)
    assert log.since(950) == (sent[950:], None)


def test_the_byte_bound_keeps_the_newest_and_always_one() -> None:
    log = FrameLog(10_000, 50_000)
    sent = fill(log, 500, "x" * 300)
    frames, lost = log.since(0)
    assert sum(map(len, frames)) <= 50_000 < sum(map(len, frames)) + len(sent[0])
    assert frames == sent[-len(frames):] and lost == (1, 500 - len(frames))
    huge = frame(501, "y" * 100_000)
    log.append(huge)
    assert log.since(0) == ([huge], (1, 500))


def test_dropping_through_an_ack_mid_block() -> None:
    log = FrameLog(10_000, 2**30)
    sent = fill(log, 3 * BLOCK + 5)
    log.drop_through(BLOCK + 10)
    assert log.since(BLOCK + 10) == (sent[BLOCK + 10:], None)
    assert log.since(3) == (sent[BLOCK + 10:], (4, BLOCK + 10))
    log.drop_through(10**6)  # beyond the newest: everything goes, the numbering goes on
    assert log.since(0) == ([], (1, 3 * BLOCK + 5))
    assert log.append(frame(3 * BLOCK + 6)) == 3 * BLOCK + 6


def test_blocks_are_compressed() -> None:
    log = FrameLog(10_000, 2**30)
    sent = fill(log, 10 * BLOCK + 1)
    packed = sum(len(block.packed) for block in log._blocks)
    assert packed * 4 < sum(map(len, sent[: 10 * BLOCK]))


def test_a_frame_must_be_one_line() -> None:
    with pytest.raises(ValueError):
        FrameLog(10, 1000).append('{"a":\n1}')
