"""Reading a JSON request body field by field, with errors that name the field.

The dialects accept the fields their clients send and ignore the others (clients send ``model``, ``priority``
or ``stream`` whether a server uses them or not). A field of the wrong type is refused, never coerced: ``"5"`` is
not a ``top_n`` and ``1`` is not ``true``, so a client bug shows up at once instead of as odd results.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..errors import InvalidInputError
from ..inputs import check_encodable
from .errors import InvalidField

__all__ = ["Fields", "json_kind"]

_MISSING: Any = object()
# Integers past 64 bits are no count or length any client means, and numpy cannot compare with them.
_LARGEST_INTEGER = 2**63 - 1


def json_kind(value: object) -> str:
    """How a JSON value is named in messages: ``a string``, ``an array``, ``null``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class Fields:
    """One JSON object; each getter returns a field checked for type, or raises :class:`InvalidField`."""

    def __init__(self, body: object) -> None:
        if not isinstance(body, dict):
            raise InvalidField(f"the request body must be a JSON object, got {json_kind(body)}")
        self._body: dict[str, Any] = body

    def _get(self, name: str) -> Any:
        value = self._body.get(name, _MISSING)
        return _MISSING if value is None else value  # null means "not given", as the dialects' schemas say

    def string(self, name: str) -> str:
        """A required string."""
        value = self._get(name)
        if value is _MISSING:
            raise InvalidField(f"`{name}` is required: a string", field=name)
        if not isinstance(value, str):
            raise InvalidField(f"`{name}` must be a string, got {json_kind(value)}", field=name)
        return _text(name, value)

    def boolean(self, name: str, default: bool | None) -> bool | None:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise InvalidField(f"`{name}` must be true or false, got {json_kind(value)}", field=name)
        return value

    def integer(self, name: str, minimum: int = 1) -> int | None:
        """An optional integer of at least ``minimum``."""
        value = self._get(name)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidField(f"`{name}` must be an integer, got {json_kind(value)}", field=name)
        if value < minimum:
            raise InvalidField(f"`{name}` must be at least {minimum}, got {value}", field=name)
        if value > _LARGEST_INTEGER:
            raise InvalidField(f"`{name}` must be at most {_LARGEST_INTEGER}, got {value}", field=name)
        return value

    def choice(self, name: str, choices: Collection[str], default: str) -> str:
        """One of ``choices`` (lower case), matched case-insensitively: TEI writes ``"Right"``, others ``"right"``."""
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or value.lower() not in choices:
            allowed = ", ".join(f'"{choice}"' for choice in choices)
            raise InvalidField(f"`{name}` must be one of {allowed}, got {value!r}", field=name)
        return value.lower()

    def strings(self, name: str) -> list[str]:
        """A required array of strings."""
        return self._string_list(name, self._required_array(name))

    def string_or_strings(self, name: str) -> list[str]:
        """A required string or array of strings, as a list."""
        value = self._get(name)
        if isinstance(value, str):
            return [_text(name, value)]
        return self._string_list(name, self._required_array(name, "a string or an array of strings"))

    def documents(self, name: str) -> list[str]:
        """A required array whose items are strings or ``{"text": string}`` objects (Cohere's v1 documents)."""
        texts = []
        for index, item in enumerate(self._required_array(name)):
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                texts.append(_text(f"{name}[{index}].text", item["text"]))
            elif isinstance(item, str):
                texts.append(_text(f"{name}[{index}]", item))
            else:
                where = f"{name}[{index}]"
                got = 'an object without a "text" string' if isinstance(item, dict) else json_kind(item)
                raise InvalidField(
                    f'`{where}` must be a string or an object with a "text" string, got {got}', field=where
                )
        return texts

    def _required_array(self, name: str, what: str = "an array of strings") -> list[Any]:
        value = self._get(name)
        if value is _MISSING:
            raise InvalidField(f"`{name}` is required: {what}", field=name)
        if not isinstance(value, list):
            raise InvalidField(f"`{name}` must be {what}, got {json_kind(value)}", field=name)
        return value

    @staticmethod
    def _string_list(name: str, values: list[Any]) -> list[str]:
        for index, item in enumerate(values):
            if not isinstance(item, str):
                where = f"{name}[{index}]"
                raise InvalidField(f"`{where}` must be a string, got {json_kind(item)}", field=where)
            _text(f"{name}[{index}]", item)
        return values


def _text(where: str, text: str) -> str:
    """``text``, refused where the tokenizer cannot take it (a lone surrogate, from a broken ``\\u`` escape)."""
    try:
        check_encodable(text, f"`{where}`")
    except InvalidInputError as error:
        raise InvalidField(str(error), field=where) from None
    return text
