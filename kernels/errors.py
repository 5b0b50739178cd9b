"""The errors of the core: what a request can meet. Each is small, carries its message for
the client, and is translated once, in `gateway/errors.py`, to an HTTP status, a WebSocket
close code or an `error` frame."""


class GatewayError(Exception):
    """Base class: a request that cannot be done, and why."""


class InvalidRequest(GatewayError):
    """The request itself is wrong (a bad parameter or body), whatever the gateway's state."""


class TimeoutTooLarge(InvalidRequest):
    """An execution asked for more time than `max_timeout`."""


class CodeTooLarge(InvalidRequest):
    """Code longer than `max_code_bytes`."""


class NotUnicode(InvalidRequest):
    """Text no kernel message can carry: a lone surrogate (JSON lets one be escaped)."""


class UnreadableCode(InvalidRequest):
    """Code a kernel would read as keystrokes rather than text (see Languages.check_code)."""


class UnknownKernelspec(GatewayError):
    """No kernelspec (or kernelspec resource) of that name is served."""


class NotWaitingForInput(GatewayError):
    """An input reply, with no running code waiting for one."""


class TooManySockets(GatewayError):
    """A kernel, or a client, has as many sockets open as it may."""


class KernelError(GatewayError):
    """Base class: something about a kernel went wrong."""


class KernelStartFailed(KernelError):
    """A kernel did not become ready within `kernel_startup_timeout`."""


class KernelDied(KernelError):
    """The kernel process ended while we were talking to it."""


class KernelBusyTimeout(KernelError):
    """A request to the kernel (not an execution) got no reply in time."""


class UnknownLanguage(InvalidRequest):
    def __init__(self, language: str, available: list[str]) -> None:
        self.language = language
        self.available = available
        super().__init__(
            f"unknown language {language!r}; available: {', '.join(available) or 'none'}"
        )


class SessionNotFound(GatewayError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"no session with id {session_id!r}")


class SessionClosed(GatewayError):
    """The session was closed; it takes no more requests."""


class SessionLost(GatewayError):
    """The session ended without being closed (the gateway replica running its kernels
    stopped): its state is gone."""


class SessionMoving(GatewayError):
    """The session is between two gateway replicas for a moment: try again."""


class NoKernelForLanguage(GatewayError):
    """The session has no kernel of that language (it has never run code in it)."""


class CapacityExceeded(GatewayError):
    """The session or kernel limit is reached (pending starts included): try again later."""


class ServiceDraining(GatewayError):
    """The gateway is draining before it stops: no new sessions or one-shots; try again
    (another replica, or the restarted one)."""


class ClientQuotaExceeded(GatewayError):
    """This client is at its own share (sessions, kernels, starts per minute); others are not."""


class InvalidPath(InvalidRequest):
    """A file path that is not a path inside the kernel's home (absolute, `..`, NUL)."""


class FileNotFound(GatewayError):
    """No file or directory at that path in the kernel's home."""


class FileRefused(GatewayError):
    """A path the file channel will not follow or serve: a symbolic link, a device, a fifo."""


class FileConflict(GatewayError):
    """The path is of the wrong kind for the request (a directory, not a directory, not empty)."""


class StorageFull(GatewayError):
    """An upload larger than allowed, or than the kernel's home has room for."""


class NoFileChannel(GatewayError):
    """The kernel has no file channel (only the gateway's Python kernels have one)."""
