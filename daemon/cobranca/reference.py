"""The config reference, generated from the schema so the documentation cannot drift from it.

`cobranca config reference` prints it; the README embeds the same text and a test compares them.
"""

from __future__ import annotations

import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import Config


def config_reference() -> str:
    rows: list[str] = [
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    _rows(Config, "", rows)
    return "\n".join(rows) + "\n"


def _rows(model: type[BaseModel], prefix: str, rows: list[str]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        many = get_origin(field.annotation) is tuple and nested is not None
        rows.append(
            f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} "
            f"| {(field.description or _doc(nested)).replace('|', '/')} |"
        )
        if nested is not None:
            _rows(nested, f"{key}[]." if many else f"{key}.", rows)


def _doc(model: type[BaseModel] | None) -> str:
    if model is None or not model.__doc__:
        return ""
    return " ".join(model.__doc__.split())


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " / ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(names) + (" (optional)" if type(None) in get_args(annotation) else "")
    if origin is tuple:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, Enum):
            return "enum"
        return {"str": "text", "int": "integer", "float": "number", "bool": "true/false",
                "Decimal": "amount"}.get(annotation.__name__, annotation.__name__)  # fmt: skip
    return str(annotation)


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel | dict):
        return "(see below)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    if value is None:
        return "none"
    if value == ():
        return "[]"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f"`{value}`"
