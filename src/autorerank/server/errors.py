"""What the server answers when it does not answer 200, in one table.

Every refusal is an :class:`ApiError`; its class decides the HTTP status and the error type the dialects report
(each class declares both, :data:`STATUS` collects them), its message says what was wrong (the field, the index,
the limit) and how to fix it::

    ApiError                    status  error type
    ├── MalformedRequest        400     BadRequest       the body is not JSON
    ├── Unauthorized            401     Unauthorized     no bearer key, or the wrong one
    ├── PayloadTooLarge         413     PayloadTooLarge  too many documents or bytes, or a text too long to keep whole
    ├── InvalidField            422     Validation       a field missing or of the wrong type or value (named)
    ├── Overloaded              429     Overloaded       the queue is full; ``Retry-After`` says when to come back
    ├── ModelFailed             500     Backend          the model raised while scoring this request's batch
    └── NotServing              503     Unavailable      the model worker has stopped

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

    status = 500  # the HTTP status
    error_type = "Error"  # the kind of error, as TEI's ``error_type`` and vLLM's ``type`` report it

    def __init__(self, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class MalformedRequest(ApiError):
    status, error_type = 400, "BadRequest"


class Unauthorized(ApiError):
    status, error_type = 401, "Unauthorized"


class PayloadTooLarge(ApiError):
    status, error_type = 413, "PayloadTooLarge"


class InvalidField(ApiError):
    status, error_type = 422, "Validation"


class Overloaded(ApiError):
    status, error_type = 429, "Overloaded"


class ModelFailed(ApiError):
    status, error_type = 500, "Backend"


class NotServing(ApiError):
    status, error_type = 503, "Unavailable"


STATUS: Mapping[type[ApiError], int] = {
    error: error.status
    for error in (
        MalformedRequest,
        Unauthorized,
        PayloadTooLarge,
        InvalidField,
        Overloaded,
        ModelFailed,
        NotServing,
        ApiError,
    )
}


def as_api_error(error: BaseException) -> ApiError:
    """The answer for an exception raised while scoring: the request's fault (422) or the model's (500)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, (InvalidInputError, InvalidOptionError)):
        return InvalidField(str(error))
    return ModelFailed(f"the model failed on this request's batch: {type(error).__name__}: {error}")
