"""Why a listening socket could not be opened, said as one line the operator can act on.

Binding fails for reasons outside the program (a port another program holds, a privileged
port, a host name that is not this machine's); ``serve`` prints this line and exits
rather than showing a traceback."""

from __future__ import annotations

import errno
import socket

PORT_SETTING = "--port or CONDUIT_PORT"
HOST_SETTING = "--host or CONDUIT_HOST"


class ListenError(OSError):
    """Listening on ``host``:``port`` failed; ``str()`` is the whole message, remedy
    included. An OSError still, so callers that caught the bare one keep working."""

    def __init__(self, cause: OSError, host: str, port: int, port_setting: str) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.host = host
        self.port = port
        self.message = _explain(cause, host or "every address", port, port_setting)

    def __str__(self) -> str:
        return self.message


def _explain(cause: OSError, host: str, port: int, port_setting: str) -> str:
    reason = cause.strerror or str(cause)
    if isinstance(cause, socket.gaierror):  # the name did not resolve to an address
        return (
            f"cannot listen on host {host!r}: {reason}; set {HOST_SETTING} to a name or "
            "address of this machine (0.0.0.0 for all of them)"
        )
    if cause.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use; choose another with {port_setting} "
            "(or stop the program holding it)"
        )
    if cause.errno in (errno.EACCES, errno.EPERM):
        low = " (ports below 1024 need administrator rights)" if 0 < port < 1024 else ""
        return (
            f"no permission to listen on port {port} on {host}{low}; choose another with "
            f"{port_setting}"
        )
    if cause.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {host}: it is not an address of this machine; set "
            f"{HOST_SETTING} to one of its addresses (0.0.0.0 for all of them)"
        )
    return f"cannot listen on port {port} on {host}: {reason}"
