"""What the server answers when it does not answer 200, in one table.

Every refusal is an :class:`ApiError`; its class decides the HTTP status through :data:`STATUS`, its message
says what was wrong (the field, the index, the limit) and how to fix it::

    ApiError
    ├── MalformedRequest   400  the body is not JSON
    ├── Unauthorized       401  no bearer key, or the wrong one
    ├── PayloadTooLarge    413  too many documents, too many bytes, or a text too long with truncation off
    ├── InvalidField       422  a field missing or of the wrong type or value (the message names it)
    ├── Overloaded         429  the queue is full; ``Retry-After`` says when to come back
    ├── ModelFailed        500  the model raised while scoring this request's batch
    └── NotServing         503  the model worker has stopped

Library errors raised while scoring map through :func:`as_api_error`: bad input or options are the request's
fault (422), anything else is the model's (500).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InvalidInputError, InvalidOptionError

__all__ = [
    "STATUS",
    "ApiError",
    "InvalidField",
    "MalformedRequest",
    "ModelFailed",
    "NotServing",
    "Overloaded",
    "PayloadTooLarge",
    "Unauthorized",
    "as_api_error",
]


class ApiError(Exception):
    """A request the server refuses; ``field`` names the offending request field when there is one."""

    error_type = "Error"  # the kind of error, as TEI's ``error_type`` and vLLM's ``type`` report it

    def __init__(self, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        return next(STATUS[cls] for cls in type(self).__mro__ if cls in STATUS)


class MalformedRequest(ApiError):
    error_type = "BadRequest"


class Unauthorized(ApiError):
    error_type = "Unauthorized"


class PayloadTooLarge(ApiError):
    error_type = "PayloadTooLarge"


class InvalidField(ApiError):
    error_type = "Validation"


class Overloaded(ApiError):
    error_type = "Overloaded"


class ModelFailed(ApiError):
    error_type = "Backend"


class NotServing(ApiError):
    error_type = "Unavailable"


STATUS: Mapping[type[ApiError], int] = {
    MalformedRequest: 400,
    Unauthorized: 401,
    PayloadTooLarge: 413,
    InvalidField: 422,
    Overloaded: 429,
    ModelFailed: 500,
    NotServing: 503,
    ApiError: 500,
}


def as_api_error(error: BaseException) -> ApiError:
    """The answer for an exception raised while scoring: the request's fault (422) or the model's (500)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, (InvalidInputError, InvalidOptionError)):
        return InvalidField(str(error))
    return ModelFailed(f"the model failed on this request's batch: {type(error).__name__}: {error}")
