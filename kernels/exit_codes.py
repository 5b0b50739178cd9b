"""What a kernel process's exit code says, in words for its user."""

from __future__ import annotations

import signal

_SIGNALS = {s.value for s in signal.Signals}


def death_reason(code: int | None) -> str:
    if code is None:
        return "the kernel process ended"
    if code > 128 and code - 128 in _SIGNALS:
        code = 128 - code  # a confined kernel's death by signal n reaches us as bwrap's exit 128+n
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed from outside)" if name == "SIGKILL" else ""
        return f"the kernel process was killed by {name}{hint}"
    return f"the kernel process exited with code {code}"
