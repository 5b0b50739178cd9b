"""Turning iopub messages into nbformat outputs, and collecting them as a notebook would."""

from __future__ import annotations

import logging
import os
from typing import Any

from nbformat import NotebookNode, ValidationError
from nbformat.v4 import new_output, output_from_msg

from .events import ClearOutput, Event, Output, UpdateDisplay

log = logging.getLogger("kernels")

OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error"})
STREAM_NAMES = frozenset({"stdout", "stderr"})


def event_from_iopub(msg: dict[str, Any]) -> Event | None:
    """The event for one iopub message of an execution, or None for messages we skip.

    A malformed output (the kernel runs the user's code, which can send anything) becomes
    a line on stderr saying so, not a failed request.
    """
    try:
        return _event(msg)
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        log.warning("dropped a malformed %s message from a kernel: %s", msg["msg_type"], exc)
        notice = f"[gateway] dropped a malformed {msg['msg_type']} message from the kernel\n"
        return Output(NotebookNode(output_type="stream", name="stderr", text=notice), None)


def _event(msg: dict[str, Any]) -> Event | None:
    msg_type = msg["msg_type"]
    content = msg["content"]
    if msg_type == "stream" and (output := _stream(content)) is not None:
        return Output(output, None)
    if msg_type == "stream" and content.get("name") not in STREAM_NAMES:
        raise ValidationError(f"stream name {content.get('name')!r} is neither stdout nor stderr")
    if msg_type in OUTPUT_TYPES:
        display_id = (content.get("transient") or {}).get("display_id")
        return Output(_rich(msg_type, content) or output_from_msg(msg), display_id)
    if msg_type == "clear_output":
        return ClearOutput(wait=bool(content.get("wait", False)))
    if msg_type == "update_display_data":
        output = _rich("display_data", content) or new_output("display_data", data=content["data"], metadata=content["metadata"])
        return UpdateDisplay(output, content["transient"]["display_id"])
    return None


def _stream(content: dict[str, Any]) -> NotebookNode | None:
    """The common case, built directly: nbformat's schema check of one output costs more
    than all the rest of a message's handling (half the gateway's CPU when code prints line
    by line with flush), and these two fields are all a stream has. None: let nbformat judge."""
    text = content.get("text")
    if isinstance(text, list) and all(isinstance(line, str) for line in text):
        text = "".join(text)  # a multiline string, as nbformat allows: one string here
    if content.get("name") not in STREAM_NAMES or not isinstance(text, str):
        return None
    return NotebookNode(output_type="stream", name=content["name"], text=text)


def _rich(msg_type: str, content: dict[str, Any]) -> NotebookNode | None:
    """execute_result and display_data in their common shape, built directly, as streams
    are: a bundle of text values (what nbformat's schema asks of every type but JSON ones),
    object metadata, a count that is a count. None: let nbformat judge (its check costs
    more than the rest of the message's handling, for `1+1` a tenth of the gateway's CPU)."""
    data, metadata = content.get("data"), content.get("metadata")
    if msg_type not in ("execute_result", "display_data") or not isinstance(data, dict) or not isinstance(metadata, dict):
        return None
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in data.items()):
        return None
    output = NotebookNode(output_type=msg_type, data=NotebookNode(data), metadata=NotebookNode(metadata))
    if msg_type == "execute_result":
        count = content.get("execution_count")
        if not (count is None or (type(count) is int and count >= 0)):
            return None
        output["execution_count"] = count
    return output


class OutputCollector:
    """The outputs of one execution as a notebook ends up showing them.

    Consecutive streams of the same name merge into one output; `clear_output(wait=True)`
    clears when the next output arrives; `update_display_data` rewrites every output shown
    under its display id.
    """

    def __init__(self) -> None:
        self._outputs: list[NotebookNode] = []
        self._display_ids: dict[int, str] = {}  # index in outputs -> display id
        self._clear_pending = False
        # The pieces of the last output while it is a stream still growing: joined once,
        # not copied whole at every piece (megabytes of output come in hundreds of pieces).
        self._stream_pieces: list[str] = []

    @property
    def outputs(self) -> list[NotebookNode]:
        self._join_stream()
        return self._outputs

    def apply(self, event: Event) -> None:
        if isinstance(event, Output):
            self._add(event)
        elif isinstance(event, ClearOutput):
            if event.wait:
                self._clear_pending = True
            else:
                self._clear()
        elif isinstance(event, UpdateDisplay):
            for index, display_id in self._display_ids.items():
                if display_id == event.display_id:
                    self._outputs[index]["data"] = event.output["data"]
                    self._outputs[index]["metadata"] = event.output["metadata"]

    def _clear(self) -> None:
        self._outputs.clear()
        self._display_ids.clear()
        self._clear_pending = False
        self._stream_pieces = []

    def _add(self, event: Output) -> None:
        if self._clear_pending:
            self._clear()
        output = event.output
        last = self._outputs[-1] if self._outputs else None
        if (
            last is not None
            and output["output_type"] == "stream"
            and last["output_type"] == "stream"
            and last["name"] == output["name"]
        ):
            self._stream_pieces.append(output["text"])
            return
        self._join_stream()
        # Copy: the event's output is also sent to clients and must not change under them.
        self._outputs.append(NotebookNode(dict(output)))
        self._stream_pieces = [output["text"]] if output["output_type"] == "stream" else []
        if event.display_id:
            self._display_ids[len(self._outputs) - 1] = event.display_id

    def _join_stream(self) -> None:
        if len(self._stream_pieces) > 1:
            self._outputs[-1]["text"] = "".join(self._stream_pieces)
            self._stream_pieces = [self._outputs[-1]["text"]]

    def stdout_lines(self) -> list[str]:
        return self._stream_text("stdout").splitlines()

    def error_lines(self) -> list[str]:
        lines: list[str] = []
        for output in self.outputs:
            if output["output_type"] == "stream" and output["name"] == "stderr":
                lines.extend(output["text"].splitlines())
            elif output["output_type"] == "error":
                lines.append(f"{output['ename']}: {output['evalue']}")
        return lines

    def _stream_text(self, name: str) -> str:
        return "".join(
            o["text"] for o in self.outputs if o["output_type"] == "stream" and o["name"] == name
        )


def warm_output_validation() -> None:
    """nbformat compiles its schema validator on first use (tens of ms): pay that at start-up,
    not in a user's first request.

    Its default validator compiles the whole notebook schema with fastjsonschema (~7 MB of
    gateway memory), yet validating one output against a sub-schema goes through jsonschema
    anyway; NBFORMAT_VALIDATOR is nbformat's own switch, read at each validation, and an
    operator's setting wins."""
    os.environ.setdefault("NBFORMAT_VALIDATOR", "jsonschema")
    new_output("stream", name="stdout", text="")
