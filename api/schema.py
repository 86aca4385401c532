"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) of the types the API answers with, read from their
annotations: dataclasses and TypedDicts become closed objects whose fields are all required (an answer
that gains, loses or retypes a field no longer matches its document)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def json_schema(kind: Any, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The schema of values of `kind`; `optional`: an object's fields that an answer may leave out."""
    if kind in _SCALARS:
        return {"type": _SCALARS[kind]}
    if kind is Any:
        return {}
    origin, args = get_origin(kind), get_args(kind)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [json_schema(arg) for arg in args]}
    if origin is list:
        return {"type": "array", "items": json_schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": json_schema(args[1])}
    if dataclasses.is_dataclass(kind) or is_typeddict(kind):
        fields = get_type_hints(kind)
        return {
            "type": "object",
            "properties": {name: json_schema(field) for name, field in fields.items()},
            "required": [name for name in fields if name not in optional],
            "additionalProperties": False,
        }
    raise TypeError(f"no JSON Schema for {kind!r}")


def without(schema: dict[str, Any], *names: str, **added: dict[str, Any]) -> dict[str, Any]:
    """An object schema less the properties `names`, plus the required properties `added`."""
    properties = {key: value for key, value in schema["properties"].items() if key not in names} | added
    required = [key for key in schema["required"] if key not in names] + list(added)
    return {**schema, "properties": properties, "required": required}
