"""Typed records decoded strictly from JSON, for the container start path.

msgspec costs ~35 ms to import (it pulls in typing_extensions, inspect,
decimal, uuid...), about what runc needs to run a whole container, so the
runtime spec types use this small equivalent instead: annotated classes,
strict type checks with the JSON path in every error, unknown keys ignored,
camelCase names on the wire. Annotations of record fields must be real
types (no ``from __future__ import annotations`` in modules that define
records; this module's own annotations are strings).
"""

from __future__ import annotations

import types

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

_NONE = type(None)


class ValidationError(ValueError):
    pass


#: Types whose JSON values are taken as they are when their type is exactly
#: right (float is left out: an int becomes a float).
_AS_IS = (str, int, bool, type(None))


def _exact(tp: Any) -> tuple[type, ...]:
    """The value types a field of type ``tp`` takes as they are (fast path)."""
    if tp in _AS_IS:
        return (tp,)
    if isinstance(tp, types.UnionType) and all(a in _AS_IS for a in tp.__args__):
        return tuple(tp.__args__)
    return ()


class _Field:
    __slots__ = ("default", "exact", "factory", "json_name", "name", "required", "type")

    def __init__(self, name: str, json_name: str, type_: Any, default: Any,
                 factory: Any, required: bool) -> None:
        self.name = name
        self.json_name = json_name
        self.type = type_
        self.exact = _exact(type_)
        self.default = default
        self.factory = factory
        self.required = required


class Factory:
    """A default built anew for each record (lists, nested records)."""

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Struct:
    """Base of typed records. Subclasses annotate fields; ``__renames__``
    overrides a field's JSON name where camelCase does not give it."""

    __fields__: tuple[_Field, ...] = ()
    __renames__: dict[str, str] = {}

    def __init_subclass__(cls) -> None:
        fields = {f.name: f for f in cls.__fields__}
        for name, type_ in cls.__dict__.get("__annotations__", {}).items():
            if name.startswith("_"):
                continue
            default = cls.__dict__.get(name, _MISSING)
            factory = default.make if isinstance(default, Factory) else None
            fields[name] = _Field(name, cls.__renames__.get(name, _camel(name)), type_,
                                  None if factory else default, factory,
                                  default is _MISSING)
            if name in cls.__dict__:
                delattr(cls, name)
        cls.__fields__ = tuple(fields.values())

    def __init__(self, **values: Any) -> None:
        for f in self.__fields__:
            if f.name in values:
                setattr(self, f.name, values.pop(f.name))
            elif f.factory is not None:
                setattr(self, f.name, f.factory())
            elif f.required:
                raise TypeError(f"{type(self).__name__}: missing field {f.name!r}")
            else:
                setattr(self, f.name, f.default)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(values)}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self.__fields__)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.__fields__)
        return f"{type(self).__name__}({inner})"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "str", int: "int", float: "float",
            bool: "bool", _NONE: "null"}.get(type(value), type(value).__name__)


def _expected(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, Struct):
        return "object"
    if isinstance(tp, types.GenericAlias):
        return "array" if tp.__origin__ is list else "object"
    if isinstance(tp, types.UnionType):
        return " | ".join(_expected(a) for a in tp.__args__)
    return {_NONE: "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def convert(tp: Any, value: Any, path: str = "$") -> Any:
    """Check value (decoded JSON) against tp and build records."""
    if isinstance(tp, type) and issubclass(tp, Struct):
        if type(value) is not dict:
            raise _mismatch(tp, value, path)
        return _record(tp, value, path)
    if tp is object or (getattr(tp, "__module__", None) == "typing"
                        and getattr(tp, "__name__", getattr(tp, "_name", None)) == "Any"):
        return value
    if tp is bool or tp is str or tp is _NONE:
        if type(value) is not tp:
            raise _mismatch(tp, value, path)
        return value
    if tp is int:
        if type(value) is not int:
            raise _mismatch(tp, value, path)
        return value
    if tp is float:
        if type(value) not in (int, float):
            raise _mismatch(tp, value, path)
        return float(value)
    if isinstance(tp, types.UnionType):
        args = tp.__args__
        if value is None and _NONE in args:
            return None
        choices = [a for a in args if a is not _NONE]
        if len(choices) == 1:  # Optional[X]: report the error inside X
            return convert(choices[0], value, path)
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return convert(arg, value, path)
            except ValidationError:
                continue
        raise _mismatch(tp, value, path)
    if isinstance(tp, types.GenericAlias):
        origin, args = tp.__origin__, tp.__args__
        if origin is list:
            if type(value) is not list:
                raise _mismatch(tp, value, path)
            item_tp = args[0]
            if item_tp in _AS_IS and all(type(item) is item_tp for item in value):
                return list(value)  # the common case, without a path per item
            return [convert(item_tp, item, f"{path}[{i}]") for i, item in enumerate(value)]
        if origin is dict:
            if type(value) is not dict:
                raise _mismatch(tp, value, path)
            key_tp, value_tp = args
            if key_tp is str and value_tp in _AS_IS and all(
                    type(v) is value_tp for v in value.values()):
                return dict(value)  # JSON keys are str
            return {convert(key_tp, k, path): convert(value_tp, v, f"{path}.{k}")
                    for k, v in value.items()}
    raise TypeError(f"unsupported field type {tp!r}")


def _mismatch(tp: Any, value: Any, path: str) -> ValidationError:
    return ValidationError(f"Expected `{_expected(tp)}`, got `{_type_name(value)}` - at `{path}`")


def _record(cls: type[Struct], data: dict[str, Any], path: str) -> Any:
    obj = cls.__new__(cls)
    for f in cls.__fields__:
        if f.json_name in data:
            value = data[f.json_name]
            if type(value) in f.exact:
                setattr(obj, f.name, value)
            else:
                setattr(obj, f.name, convert(f.type, value, f"{path}.{f.json_name}"))
        elif f.factory is not None:
            setattr(obj, f.name, f.factory())
        elif f.required:
            raise ValidationError(f"Object missing required field `{f.json_name}` - at `{path}`")
        else:
            setattr(obj, f.name, f.default)
    return obj


def to_builtins(value: Any) -> Any:
    """Records to JSON-ready dicts; fields equal to their default are left out."""
    if isinstance(value, Struct):
        out = {}
        for f in value.__fields__:
            item = getattr(value, f.name)
            if f.factory is None and not f.required and item == f.default:
                continue
            out[f.json_name] = to_builtins(item)
        return out
    if isinstance(value, list):
        if all(type(v) in _AS_IS for v in value):
            return list(value)
        return [to_builtins(v) for v in value]
    if isinstance(value, dict):
        return {k: to_builtins(v) for k, v in value.items()}
    return value


def replace(record: Any, **changes: Any) -> Any:
    """A shallow copy of record with some fields changed."""
    values = {f.name: getattr(record, f.name) for f in record.__fields__}
    values.update(changes)
    return type(record)(**values)
