"""Loop detection: the ``Via`` chain a request carries through gateways.

A provider whose ``base_url`` points back at this gateway (or at another gateway that
points back here) would otherwise call itself until file descriptors run out. Each
gateway process appends its own token to the ``Via`` header it sends upstream, after the
chain it received; a request whose chain already holds this process's token, or more
hops than any sane deployment has, is refused (508).
"""

from __future__ import annotations

import secrets
from contextvars import ContextVar

#: This process's entry in a Via chain; random so two processes never share one.
TOKEN = "conduit-" + secrets.token_hex(6)
#: Longer chains are refused even without this process's token in them.
MAX_HOPS = 8
MAX_LENGTH = 1024

#: The Via chain of the client request being served (empty outside a request). Upstream
#: calls read it, so adapters need not pass it along.
received: ContextVar[str] = ContextVar("conduit_via", default="")


def loops(chain: str) -> bool:
    """Whether a received Via chain has been here already, or is too long to be sane."""
    if not chain:
        return False
    if len(chain) > MAX_LENGTH:
        return True
    hops = [hop.strip() for hop in chain.split(",")]
    return len(hops) > MAX_HOPS or any(hop.endswith(" " + TOKEN) for hop in hops)


def outgoing() -> str:
    """The Via value for an upstream call: the received chain, then this process."""
    chain = received.get()
    own = "1.1 " + TOKEN
    return f"{chain}, {own}" if chain else own
