"""Ids made on every request (request ids, request logs).

A random part per process and a counter: unique across instances (48 random bits each),
not secret (nothing is authorised by them), and no getrandom(2) call per request. Ids that
guard something (keys, session secrets) come from ``secrets`` in full instead.
"""

from __future__ import annotations

import itertools
import secrets


class IdSequence:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix + secrets.token_hex(6)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"
