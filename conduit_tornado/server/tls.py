"""TLS for the gateway's own listening sockets (CONDUIT_TLS_CERT / CONDUIT_TLS_KEY): the
server context, and the relay that hands a WebSocket on a TLS connection to Tornado.

Our HTTP server gives a WebSocket upgrade's socket to a Tornado IOStream (Exchange.detach).
On plain TCP that is a duplicate of the descriptor; on TLS it cannot be, since the
session's state lives in asyncio's TLS transport. So the transport stays where it is and
a local socket pair carries the WebSocket's plaintext between it and Tornado's stream,
with each side's flow control passed on to the other (a client that stops reading stops
Tornado's writes, and the other way round)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import cast

import tornado.iostream

from conduit_tornado.core.settings import Settings

_opening: set[asyncio.Task[tuple[asyncio.Transport, asyncio.BaseProtocol]]] = set()


class TlsSettingsError(ValueError):
    """The TLS settings are incomplete, or their files cannot be used."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal, from every worker at once.
    raise TlsSettingsError("CONDUIT_TLS_KEY is protected by a passphrase: give an unencrypted key")


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context serving HTTPS and WSS, or None for plain HTTP. Raises TlsSettingsError
    with a message fit for the terminal when only one of the two settings is given or the
    files cannot be loaded."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("CONDUIT_TLS_CERT", "CONDUIT_TLS_KEY")[:: 1 if key is None else -1]
        raise TlsSettingsError(
            f"{given} is set without {missing}: serving TLS needs both the certificate "
            "(--tls-cert) and its private key (--tls-key)"
        )
    for name, path in (("CONDUIT_TLS_CERT", cert), ("CONDUIT_TLS_KEY", key)):
        if not Path(path).is_file():
            raise TlsSettingsError(f"{name}: no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 at least
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise TlsSettingsError(
            f"cannot use {cert} with {key} ({exc.reason or exc}): both PEM, the key the "
            "certificate's own?"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Half(asyncio.Protocol):
    """One end of the relay: what its transport receives goes out through the other's."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _Half | None = None
        self._paused_by_other = False  # the other side's buffer is full: do not read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._paused_by_other:
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.transport.write(data)

    def eof_received(self) -> bool | None:
        return None  # closes this side; connection_lost closes the other

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.close()  # after what it still holds is written

    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.hold(True)

    def resume_writing(self) -> None:
        if self.other is not None:
            self.other.hold(False)

    def hold(self, paused: bool) -> None:
        self._paused_by_other = paused
        if self.transport is not None and not self.transport.is_closing():
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()


def relay_to_stream(transport: asyncio.Transport) -> tornado.iostream.IOStream:
    """Tornado's IOStream for the plaintext of a TLS connection whose reading is paused;
    the transport is read again once the relay's local side is open."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    outer, inner = _Half(), _Half()
    outer.other, inner.other = inner, outer
    outer.transport = transport
    transport.set_protocol(outer)

    def opened(task: asyncio.Task[tuple[asyncio.Transport, asyncio.BaseProtocol]]) -> None:
        _opening.discard(task)
        if task.cancelled() or task.exception() is not None:
            ours.close()
            transport.close()
        elif not transport.is_closing():
            transport.resume_reading()

    task = loop.create_task(loop.connect_accepted_socket(lambda: inner, ours))
    _opening.add(task)  # held until done (the loop keeps only a weak reference)
    task.add_done_callback(opened)
    return tornado.iostream.IOStream(theirs)
