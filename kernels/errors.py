"""Exceptions of the kernel layer. `gateway/` translates each one once, at its edge."""


class KernelError(Exception):
    """Base class: something about a kernel went wrong."""


class KernelStartFailed(KernelError):
    """A kernel did not become ready within `kernel_startup_timeout`."""


class KernelDied(KernelError):
    """The kernel process ended while we were talking to it."""


class KernelBusyTimeout(KernelError):
    """A request to the kernel (not an execution) got no reply in time."""


class UnknownLanguage(KernelError):
    def __init__(self, language: str, available: list[str]) -> None:
        self.language = language
        self.available = available
        super().__init__(
            f"unknown language {language!r}; available: {', '.join(available) or 'none'}"
        )


class SessionNotFound(KernelError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"no session with id {session_id!r}")


class SessionClosed(KernelError):
    """The session was closed; it takes no more requests."""


class NoKernelForLanguage(KernelError):
    """The session has no kernel of that language (it has never run code in it)."""


class CapacityExceeded(KernelError):
    """The session or kernel limit is reached (pending starts included): try again later."""


class ClientQuotaExceeded(KernelError):
    """This client is at its own share (sessions, kernels, starts per minute); others are not."""
