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


def _msg(msg_type: str, content: dict) -> dict:
    return {"msg_type": msg_type, "content": content, "header": {"msg_type": msg_type}, "parent_header": {}, "metadata": {}}


def test_rich_outputs_built_directly_are_what_nbformat_builds() -> None:
    from nbformat.v4 import output_from_msg

    from kernels.outputs import event_from_iopub

    for msg in [
        _msg("execute_result", {"data": {"text/plain": "2", "text/html": "<b>2</b>"}, "metadata": {}, "execution_count": 4}),
        _msg("display_data", {"data": {"image/png": "iVBORw0KGgo="}, "metadata": {"image/png": {"width": 3}}, "transient": {}}),
        # not all text: nbformat's own path, which accepts JSON bundles
        _msg("display_data", {"data": {"application/json": {"a": [1]}}, "metadata": {}, "transient": {}}),
    ]:
        assert event_from_iopub(msg).output == output_from_msg(msg)


def test_rich_outputs_nbformat_refuses_are_dropped_with_a_notice() -> None:
    from kernels.outputs import event_from_iopub

    for content in [
        {"data": {"text/plain": 5}, "metadata": {}, "execution_count": 1},
        {"data": {"text/plain": "x"}, "metadata": {}, "execution_count": -1},
        {"data": {"text/plain": "x"}, "metadata": [], "execution_count": 1},
    ]:
        event = event_from_iopub(_msg("execute_result", content))
        assert event.output["name"] == "stderr" and "dropped a malformed" in event.output["text"], (content, event)
