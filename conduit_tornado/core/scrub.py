"""Secrets out of text that leaves the process: log lines, span attributes, errors.

Two nets, because neither alone is enough. Patterns catch what looks like a credential
(our own key format, ``Bearer`` tokens, ``key=`` style query parameters and fields, the
common provider key shapes). Known values catch the rest: provider credentials are
arbitrary strings (a self-hosted server's key may look like anything), so the router
hands each provider's key and header values here when it builds the provider's adapter,
and any text that contains one of them has it replaced. A provider that echoes the key it
was sent in its error body is the case this exists for.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable

REDACTED = "[redacted]"
#: Known values kept at most (oldest forgotten first): providers x credentials, bounded.
MAX_KNOWN = 4096
#: Shorter values are not scrubbed by value: "1" or "on" would redact half a log line.
MIN_KNOWN = 8

#: Names whose value is a credential, as a query parameter, a header or a JSON field.
SECRET_NAMES = (
    "key",
    "api_key",
    "api-key",
    "apikey",
    "x-api-key",
    "x-goog-api-key",
    "access_token",
    "token",
    "client_secret",
    "secret",
    "password",
    "authorization",
    "proxy-authorization",
    "sig",
    "signature",
)
_NAMES = "|".join(re.escape(n) for n in sorted(SECRET_NAMES, key=len, reverse=True))
#: Replaced whole: our own keys (virtual and master), common provider key shapes
#: (OpenAI / Anthropic style, Google API keys). Our keys are ``condt_`` and 43 random
#: characters (``condt_master_`` and 43 for master keys; core/security.py), and the
#: prefix the logs, the admin API and the UI show to tell keys apart is ``condt_`` and 6
#: (VISIBLE_CHARS): from 16 on, the run is mostly key material, so a key cut short in a
#: copy is still redacted while the prefix is not. A master key of the operator's choosing
#: (any length) is scrubbed by value (gateway.resolve_master_key remembers it).
_WHOLE = re.compile(r"condt_[A-Za-z0-9_\-]{16,}|\bsk-[A-Za-z0-9_\-]{12,}|\bAIza[0-9A-Za-z_\-]{20,}")
#: The value after a name that says what it is: ``Bearer <token>``, ``name=value`` (query
#: strings, forms), ``"name": "value"`` (JSON) and ``name: value`` (headers).
_AFTER_NAME = re.compile(
    rf"(?i)((?:\b(?:bearer|basic)\s+)|(?:(?<![A-Za-z0-9_\-])(?:{_NAMES})[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic)\s+)?))"
    r"(?!\[redacted\])[^\s\"'&,;}\]]{4,}"
)

#: Credentials in a URL's user info (a base_url may carry them; client errors quote URLs).
_USERINFO = re.compile(r"(?i)\b((?:https?|wss?)://)[^/\s@]+@")

_known: OrderedDict[str, None] = OrderedDict()
_known_pattern: re.Pattern[str] | None = None


def remember(values: Iterable[str | None]) -> None:
    """Scrub these values (credentials the gateway holds) wherever they appear from now on."""
    global _known_pattern
    changed = False
    for value in values:
        if not value or len(value) < MIN_KNOWN:
            continue
        if value in _known:
            _known.move_to_end(value)
            continue
        _known[value] = None
        changed = True
        while len(_known) > MAX_KNOWN:
            _known.popitem(last=False)
    if changed:
        # Longest first, so a value that contains another is replaced whole.
        ordered = sorted(_known, key=len, reverse=True)
        _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def scrub(text: str) -> str:
    """The text with every credential it seems to hold replaced by ``[redacted]``."""
    if not text:
        return text
    known = _known_pattern
    if known is not None:
        text = known.sub(REDACTED, text)
    text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    text = _AFTER_NAME.sub(r"\1" + REDACTED, text)
    return _WHOLE.sub(REDACTED, text)


#: Query parameters secret only in a URL: Hub OAuth's callback (conduit_tornado/hub/)
#: carries a one-use code and its state. (As JSON fields, "code" is an error code.)
_URL_ONLY = re.compile(r"([?&](?:code|state)=)[^&#]*", re.IGNORECASE)


def scrub_uri(uri: str) -> str:
    """A request URI fit for a log line: credentials in its query redacted."""
    return _URL_ONLY.sub(r"\1[redacted]", scrub(uri))
