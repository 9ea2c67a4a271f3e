"""Request-body conversion as Magento's ServiceInputProcessor does it (docs/magento.md §9.1).

* Top-level keys are PHP parameter names, accepted in camelCase or snake_case; unknown
  top-level keys are ignored.
* Nested keys are matched through their UpperCamelCase getter name, so ``order_item_id``,
  ``orderItemId`` and ``OrderItemId`` are the same field; an unknown nested key is rejected with
  ``"%fieldName" is not supported...`` (fieldName in UpperCamelCase).
* Scalars are converted like PHP: ``int``/``float`` need an ``is_numeric`` value, ``bool`` never
  fails, ``string`` takes any scalar. A bad value gives the rendered message
  ``The "abc" value's type is invalid. The "float" type was expected. Verify and try again.``,
  prefixed with ``Error occurred during "qty" processing.`` inside nested objects.
* ``null`` means "not set".

Pure: no I/O, no state.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MagentoError, decoding_error, not_supported, required

INT = "int"
FLOAT = "float"
STRING = "string"
BOOL = "bool"

_NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_INVALID_TYPE = (
    'The "%s" value\'s type is invalid. The "%s" type was expected. Verify and try again.'
)
_NESTED = 'Error occurred during "%s" processing. %s'


@dataclass(frozen=True)
class ObjectOf:
    """A data interface: its fields (snake_case name -> type) and its PHP name for messages."""

    php_type: str
    fields: Mapping[str, FieldType] = field(default_factory=dict)

    @functools.cached_property
    def by_getter(self) -> dict[str, str]:
        """UpperCamelCase getter name -> field name."""
        return {upper_camel(name): name for name in self.fields}


@dataclass(frozen=True)
class ArrayOf:
    item: FieldType


FieldType = str | ObjectOf | ArrayOf


@functools.lru_cache(maxsize=4096)
def upper_camel(name: str) -> str:
    """PHP's ``str_replace('_', '', ucwords($name, '_'))``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


@functools.lru_cache(maxsize=1024)
def snake(name: str) -> str:
    """camelCase -> snake_case, as Magento maps top-level parameter names."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def php_string(value: Any) -> str:
    """How PHP would interpolate a decoded JSON value into a message."""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, (list, dict)):
        return "array"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _type_name(type_: FieldType) -> str:
    if isinstance(type_, ObjectOf):
        return type_.php_type
    if isinstance(type_, ArrayOf):
        return _type_name(type_.item) + "[]"
    return type_


def invalid_type(value: Any, type_: FieldType) -> str:
    return _INVALID_TYPE % (php_string(value), _type_name(type_))


def is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(_NUMERIC.match(value))


def _intval(value: Any) -> int:
    """PHP's ``(int)`` cast: never fails."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        match = re.match(r"\s*[+-]?\d+", value)
        return int(match.group()) if match else 0
    return 0


def convert_scalar(value: Any, type_: str) -> Any:
    """Convert one scalar, raising ``ValueError(message)`` with Magento's rendered text."""
    if isinstance(value, (list, dict)):
        raise ValueError(_INVALID_TYPE % ("array", type_))
    if type_ == INT:
        if not is_numeric(value):
            raise ValueError(invalid_type(value, type_))
        return int(float(value))
    if type_ == FLOAT:
        if not is_numeric(value):
            raise ValueError(invalid_type(value, type_))
        return float(value)
    if type_ == BOOL:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            return value not in ("", "0")
        return bool(value)
    # string
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _convert(value: Any, type_: FieldType, key: str) -> Any:
    """Convert a value found under ``key``; errors raised here are not yet prefixed."""
    if value is None:
        return None
    if isinstance(type_, ObjectOf):
        if not isinstance(value, dict):
            raise ValueError(invalid_type(value, type_))
        return convert_object(value, type_)
    if isinstance(type_, ArrayOf):
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            raise ValueError(_INVALID_TYPE % (_php_gettype(value), _type_name(type_)))
        if isinstance(type_.item, str):
            if type_.item == INT:
                return [_intval(element) for element in value]
            return [convert_scalar(element, type_.item) for element in value]
        return [_convert(element, type_.item, key) for element in value]
    return convert_scalar(value, type_)


def _php_gettype(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    return "string"


def convert_object(value: Mapping[str, Any], spec: ObjectOf) -> dict[str, Any]:
    """Convert a nested data object; unknown keys and bad scalars raise ``MagentoError``."""
    getters = spec.by_getter
    out: dict[str, Any] = {}
    for key, raw in value.items():
        name = getters.get(upper_camel(key))
        if name is None:
            raise not_supported(upper_camel(key))
        try:
            converted = _convert(raw, spec.fields[name], key)
        except ValueError as exc:
            raise MagentoError(400, _NESTED % (key, exc)) from None
        if converted is not None:
            out[name] = converted
    return out


@dataclass(frozen=True)
class Param:
    """One PHP method parameter: its camelCase name, type and whether it has a default."""

    name: str
    type: FieldType
    required: bool = False


def parse_body(body: bytes) -> Any:
    """Decode a JSON body; an empty body is ``{}``; anything undecodable is ``Decoding error.``"""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise decoding_error() from None


def convert_params(data: Any, params: tuple[Param, ...]) -> dict[str, Any]:
    """Pick the method parameters out of a decoded body, in signature order.

    A body that is not a JSON object has no named parameters (PHP casts it to a list).
    Missing required parameters are reported together, as Magento's InputException does.
    """
    source: Mapping[str, Any] = data if isinstance(data, dict) else {}
    out: dict[str, Any] = {}
    missing: list[str] = []
    for param in params:
        key = param.name if param.name in source else snake(param.name)
        value = source.get(key)
        if value is None:
            if param.required:
                missing.append(param.name)
            continue
        if isinstance(param.type, ObjectOf) and isinstance(value, dict):
            out[param.name] = convert_object(value, param.type)
            continue
        try:
            out[param.name] = _convert(value, param.type, key)
        except ValueError as exc:
            raise MagentoError(400, str(exc)) from None
    if missing:
        raise required(*missing)
    return out


def path_int(raw: str) -> int:
    """A path parameter declared ``int``."""
    try:
        return int(convert_scalar(raw, INT))
    except ValueError as exc:
        raise MagentoError(400, str(exc)) from None
