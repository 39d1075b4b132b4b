"""The one error type handlers raise, rendered as OpenAI's error envelope."""

from __future__ import annotations

from typing import Any

from tornado.web import HTTPError

# Default error "type" per status, following OpenAI's conventions.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(HTTPError):
    """An error a client is meant to see: status, OpenAI envelope fields, extra headers.

    A Tornado HTTPError, so Tornado sends it with its status and does not log it as a crash.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or default_type(status)
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.code, self.param)


def error_envelope(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def default_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def reject_nulls(fields: dict[str, Any], *required: str) -> None:
    """PATCH bodies may null optional fields; these ones must keep a value."""
    for name in required:
        if name in fields and fields[name] is None:
            raise ApiError(400, f"{name} cannot be null.", param=name)


def quoted(value: str) -> str:
    """A client's value (an id) quoted in an error message, cut short: it may be anything
    long, and an error is logged and shown whole."""
    return repr(value if len(value) <= 64 else value[:64] + "...")


def wrong_prefix(param: str, value: str, prefix: str) -> ApiError:
    """OpenAI's 400 for an id of another kind than the parameter takes."""
    return ApiError(
        400,
        f"Invalid '{param}': {quoted(value)}. Expected an ID that begins with '{prefix}'.",
        param=param,
        code="invalid_value",
    )


def invalid_api_key(message: str = "Invalid API key provided.") -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def not_found(message: str, code: str = "not_found", param: str | None = None) -> ApiError:
    return ApiError(404, message, code=code, param=param)


SDK_RETRY_HORIZON = 120  # the openai SDK waits at most this long for Retry-After


def refusal(code: str, message: str, retry_after: int) -> ApiError:
    """A limit's 429: Retry-After, and x-should-retry: false when no SDK retry can wait."""
    headers = {"Retry-After": str(retry_after)}
    if retry_after > SDK_RETRY_HORIZON:
        headers["x-should-retry"] = "false"  # waiting inside one call cannot help
    return ApiError(429, message, code=code, type="rate_limit_error", headers=headers)


def store_unavailable() -> ApiError:
    """The store is down or too slow: an outage the client may retry, never a 500."""
    return ApiError(
        503,
        "The gateway's store is not reachable; try again shortly.",
        code="store_unavailable",
        headers={"Retry-After": "1"},
    )
