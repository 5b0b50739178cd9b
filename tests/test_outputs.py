"""Collecting an execution's outputs as a notebook shows them, on its own."""

from __future__ import annotations

from nbformat.v4 import new_output

from kernels.events import ClearOutput, Output
from kernels.outputs import OutputCollector


def stream(name: str, text: str) -> Output:
    return Output(new_output("stream", name=name, text=text), None)


def display(text: str) -> Output:
    return Output(new_output("display_data", data={"text/plain": text}), None)


def test_streams_merge_until_something_else_comes_between() -> None:
    collector = OutputCollector()
    for event in [
        *(stream("stdout", f"{i}\n") for i in range(1000)),
        stream("stderr", "warning\n"),
        stream("stdout", "a\n"),
        stream("stdout", "b\n"),
        display("picture"),
        stream("stdout", "c\n"),
    ]:
        collector.apply(event)
    shown = [(o["output_type"], o.get("name"), o.get("text")) for o in collector.outputs]
    assert shown == [
        ("stream", "stdout", "".join(f"{i}\n" for i in range(1000))),
        ("stream", "stderr", "warning\n"),
        ("stream", "stdout", "a\nb\n"),
        ("display_data", None, None),
        ("stream", "stdout", "c\n"),
    ]
    assert collector.stdout_lines() == [*map(str, range(1000)), "a", "b", "c"]
    assert collector.error_lines() == ["warning"]


def test_reading_midway_then_more_pieces() -> None:
    collector = OutputCollector()
    collector.apply(stream("stdout", "1\n"))
    collector.apply(stream("stdout", "2\n"))
    assert collector.outputs[0]["text"] == "1\n2\n"
    collector.apply(stream("stdout", "3\n"))
    assert collector.stdout_lines() == ["1", "2", "3"] and len(collector.outputs) == 1


def test_a_waiting_clear_drops_the_pieces_too() -> None:
    collector = OutputCollector()
    collector.apply(stream("stdout", "old\n"))
    collector.apply(stream("stdout", "older\n"))
    collector.apply(ClearOutput(wait=True))
    collector.apply(stream("stdout", "new\n"))
    collector.apply(stream("stdout", "newer\n"))
    assert [o["text"] for o in collector.outputs] == ["new\nnewer\n"]
