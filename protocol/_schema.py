"""Field types for message bodies: exact wire types, limits, and conversion.

A body is a msgpack array whose fields are fixed per kind. Each dataclass field
carries one of the field types below in its metadata; they check a value when
a message is built (by an app or by the decoder, through ``__post_init__``),
turn it into its wire form, and turn a decoded wire value back. Checking is by
exact type, so ``True`` is never an int and ``1.0`` never a quantity.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

from ._errors import InvalidField

__all__ = [
    "Bool",
    "Bytes",
    "FieldType",
    "Int",
    "Opt",
    "Seq",
    "Struct",
    "Structure",
    "Text",
    "field",
    "structure",
]


def _wrong_type(path: str, expected: str, value: object) -> InvalidField:
    return InvalidField(
        f"{path} must be {expected}, got {type(value).__name__}",
        reason="wrong-type",
        field=path,
    )


def _out_of_range(path: str, detail: str) -> InvalidField:
    return InvalidField(f"{path} {detail}", reason="out-of-range", field=path)


class FieldType(Protocol):
    """What a body field knows about its values."""

    def check(self, value: Any, path: str) -> Any:
        """Raise InvalidField unless ``value`` is valid; return it (normalised)."""

    def to_wire(self, value: Any) -> Any:
        """The msgpack-ready form of a checked value."""

    def from_wire(self, obj: Any, path: str) -> Any:
        """The value for a decoded wire object (checked later by ``check``)."""

    def describe(self) -> str:
        """A one-line description for the protocol specification."""


class Int:
    """An integer within ``[lo, hi]``; never a bool, never a float."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi

    def check(self, value: Any, path: str) -> Any:
        if type(value) is not int:
            raise _wrong_type(path, "an integer", value)
        if not self.lo <= value <= self.hi:
            raise _out_of_range(path, f"must be between {self.lo} and {self.hi}, got {value}")
        return value

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, obj: Any, path: str) -> Any:
        return obj

    def describe(self) -> str:
        return f"int, {self.lo}..{self.hi}"


class Bool:
    """``true`` or ``false`` (msgpack booleans, not integers)."""

    __slots__ = ()

    def check(self, value: Any, path: str) -> Any:
        if type(value) is not bool:
            raise _wrong_type(path, "a boolean", value)
        return value

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, obj: Any, path: str) -> Any:
        return obj

    def describe(self) -> str:
        return "bool"


class Text:
    """UTF-8 text of bounded encoded length, optionally a choice or a pattern."""

    __slots__ = ("choices", "max_bytes", "min_chars", "pattern", "pattern_text")

    def __init__(
        self,
        max_bytes: int,
        *,
        min_chars: int = 0,
        choices: tuple[str, ...] | None = None,
        pattern: str | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.min_chars = min_chars
        self.choices = choices
        self.pattern_text = pattern
        self.pattern = re.compile(pattern) if pattern is not None else None

    def check(self, value: Any, path: str) -> Any:
        if type(value) is not str:
            raise _wrong_type(path, "text", value)
        if self.choices is not None:
            if value not in self.choices:
                raise _out_of_range(
                    path, f"must be one of {', '.join(self.choices)}; got {value!r}"
                )
            return value
        if len(value) < self.min_chars:
            raise _out_of_range(path, f"must have at least {self.min_chars} characters")
        # A str holds at most 4 UTF-8 bytes per character: skip the encode for short ASCII.
        if len(value) * 4 > self.max_bytes or not value.isascii():
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidField(
                    f"{path} must be Unicode text without lone surrogates (it cannot be UTF-8)",
                    reason="wrong-type",
                    field=path,
                ) from None
            if size > self.max_bytes:
                raise _out_of_range(path, f"must be at most {self.max_bytes} bytes of UTF-8")
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            raise _out_of_range(path, f"must match {self.pattern_text}; got {value!r}")
        return value

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, obj: Any, path: str) -> Any:
        return obj

    def describe(self) -> str:
        if self.choices is not None:
            return "str, one of " + ", ".join(f'"{c}"' for c in self.choices)
        text = f"str, UTF-8, at most {self.max_bytes} bytes"
        if self.min_chars:
            text += f", at least {self.min_chars} characters"
        if self.pattern_text is not None:
            text += f", matching `{self.pattern_text}`"
        return text


class Bytes:
    """A byte string of exact or bounded length (msgpack bin)."""

    __slots__ = ("max_len", "min_len")

    def __init__(self, size: int | None = None, *, min_len: int = 0, max_len: int = 0) -> None:
        if size is not None:
            min_len = max_len = size
        self.min_len = min_len
        self.max_len = max_len

    def check(self, value: Any, path: str) -> Any:
        if type(value) is not bytes:
            raise _wrong_type(path, "bytes", value)
        if not self.min_len <= len(value) <= self.max_len:
            if self.min_len == self.max_len:
                raise _out_of_range(path, f"must be exactly {self.max_len} bytes, got {len(value)}")
            raise _out_of_range(
                path, f"must be {self.min_len}..{self.max_len} bytes, got {len(value)}"
            )
        return value

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, obj: Any, path: str) -> Any:
        return obj

    def describe(self) -> str:
        if self.min_len == self.max_len:
            return f"bin, exactly {self.max_len} bytes"
        return f"bin, {self.min_len}..{self.max_len} bytes"


class Opt:
    """Either nil or a value of the inner type."""

    __slots__ = ("inner",)

    def __init__(self, inner: FieldType) -> None:
        self.inner = inner

    def check(self, value: Any, path: str) -> Any:
        if value is None:
            return None
        return self.inner.check(value, path)

    def to_wire(self, value: Any) -> Any:
        return None if value is None else self.inner.to_wire(value)

    def from_wire(self, obj: Any, path: str) -> Any:
        return None if obj is None else self.inner.from_wire(obj, path)

    def describe(self) -> str:
        return f"nil or {self.inner.describe()}"


class Seq:
    """An array of values of one type, with bounded length."""

    __slots__ = ("inner", "max_len", "min_len")

    def __init__(self, inner: FieldType, *, max_len: int, min_len: int = 0) -> None:
        self.inner = inner
        self.min_len = min_len
        self.max_len = max_len

    def check(self, value: Any, path: str) -> Any:
        if type(value) is list:
            value = tuple(value)
        if type(value) is not tuple:
            raise _wrong_type(path, "an array", value)
        if not self.min_len <= len(value) <= self.max_len:
            raise _out_of_range(
                path, f"must hold {self.min_len}..{self.max_len} items, got {len(value)}"
            )
        inner = self.inner
        return tuple(inner.check(item, f"{path}[{i}]") for i, item in enumerate(value))

    def to_wire(self, value: Any) -> Any:
        inner = self.inner
        return [inner.to_wire(item) for item in value]

    def from_wire(self, obj: Any, path: str) -> Any:
        if type(obj) is not tuple:
            raise _wrong_type(path, "an array", obj)
        inner = self.inner
        return tuple(inner.from_wire(item, f"{path}[{i}]") for i, item in enumerate(obj))

    def describe(self) -> str:
        return f"array of {self.min_len}..{self.max_len} x ({self.inner.describe()})"


T = TypeVar("T")


class Struct:
    """A nested structure (a dataclass made with :func:`structure`), as an array."""

    __slots__ = ("cls",)

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls

    def check(self, value: Any, path: str) -> Any:
        if type(value) is not self.cls:
            raise _wrong_type(path, f"a {self.cls.__name__}", value)
        return value

    def to_wire(self, value: Any) -> Any:
        return to_wire(value)

    def from_wire(self, obj: Any, path: str) -> Any:
        return from_wire(self.cls, obj, path)

    def describe(self) -> str:
        return f"{self.cls.__name__} (array)"


_SCHEMA_KEY = "buying_circles_type"


def field(ftype: FieldType, *, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its wire type attached."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={_SCHEMA_KEY: ftype})
    return dataclasses.field(default=default, metadata={_SCHEMA_KEY: ftype})


class Structure:
    """Base of wire structures: checks every field when an instance is built."""

    __slots__ = ()
    _schema: ClassVar[tuple[tuple[str, FieldType], ...]]
    _label: ClassVar[str]
    # (name, check, path) per field, with the path built once per class.
    _checks: ClassVar[tuple[tuple[str, Callable[[Any, str], Any], str], ...]]
    _names: ClassVar[tuple[str, ...]]
    # (name, from_wire, path) for the fields whose wire form needs converting.
    _converters: ClassVar[tuple[tuple[str, Callable[[Any, str], Any], str], ...]]

    def __post_init__(self) -> None:
        # Replaced per class by structure() with generated code; this generic
        # version documents what that code does.
        for name, check, path in self._checks:
            value = getattr(self, name)
            checked = check(value, path)
            if checked is not value:
                object.__setattr__(self, name, checked)
        self._check()

    def _check(self) -> None:
        """Rules across fields; subclasses override."""


_PASS_THROUGH = (Int, Bool, Text, Bytes)


def _fast_test(ftype: FieldType, var: str, env: dict[str, Any], key: str) -> str | None:
    """A Python expression true when ``var`` *may* be invalid for ``ftype``.

    When it is false the value is certainly valid and needs no normalising;
    when true, the full ``check`` runs and decides (and raises).
    """
    if isinstance(ftype, Int):
        return f"type({var}) is not int or not ({ftype.lo} <= {var} <= {ftype.hi})"
    if isinstance(ftype, Bool):
        return f"type({var}) is not bool"
    if isinstance(ftype, Bytes):
        return f"type({var}) is not bytes or not ({ftype.min_len} <= len({var}) <= {ftype.max_len})"
    if isinstance(ftype, Text):
        if ftype.choices is not None:
            env[f"choices_{key}"] = frozenset(ftype.choices)
            return f"type({var}) is not str or {var} not in choices_{key}"
        test = (
            f"type({var}) is not str or len({var}) < {ftype.min_chars}"
            f" or len({var}) * 4 > {ftype.max_bytes}"
        )
        if ftype.pattern is not None:
            env[f"pattern_{key}"] = ftype.pattern.fullmatch
            test += f" or pattern_{key}({var}) is None"
        return test
    if isinstance(ftype, Opt):
        inner = _fast_test(ftype.inner, var, env, key)
        return None if inner is None else f"{var} is not None and ({inner})"
    return None


def _generate_post_init(
    cls: type[Any], schema: tuple[tuple[str, FieldType], ...], label: str
) -> None:
    env: dict[str, Any] = {"_setattr": object.__setattr__}
    lines = ["def __post_init__(self):"]
    for i, (name, ftype) in enumerate(schema):
        key = str(i)
        env[f"check_{key}"] = ftype.check
        path = f"{label}.{name}"
        lines.append(f"    v = self.{name}")
        test = _fast_test(ftype, "v", env, key)
        if test is not None:
            lines.append(f"    if {test}:")
            lines.append(f"        check_{key}(v, {path!r})")
        else:
            lines.append(f"    c = check_{key}(v, {path!r})")
            lines.append("    if c is not v:")
            lines.append(f"        _setattr(self, {name!r}, c)")
    if cls._check is not Structure._check:
        lines.append("    self._check()")
    exec("\n".join(lines), env)
    cls.__post_init__ = env["__post_init__"]


def _slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None] | None:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            descriptor = klass.__dict__[name]
            if isinstance(descriptor, types.MemberDescriptorType):
                setter: Callable[[Any, Any], None] = descriptor.__set__
                return setter
            return None
    return None


def _check_lines(
    schema: tuple[tuple[str, FieldType], ...], label: str, names: list[str], env: dict[str, Any]
) -> list[str]:
    """Code checking each field's local variable ``names[i]`` as ``__post_init__`` does.

    A value the fast test passes is certainly valid; otherwise the field type's
    full check decides, raises, or returns the normalised value.
    """
    lines = []
    for i, ((name, ftype), var) in enumerate(zip(schema, names, strict=True)):
        env[f"check_{i}"] = ftype.check
        path = f"{label}.{name}"
        test = _fast_test(ftype, var, env, str(i))
        if test is not None:
            lines.append(f"    if {test}:")
            lines.append(f"        check_{i}({var}, {path!r})")
        else:
            lines.append(f"    {var} = check_{i}({var}, {path!r})")
    return lines


def _fill_lines(
    cls: type[Any],
    setters: list[Callable[[Any, Any], None] | None],
    names: list[str],
    env: dict[str, Any],
) -> list[str]:
    """Code setting each slot of ``self`` once from ``names``, then the cross-field rules."""
    lines = []
    for i, (setter, var) in enumerate(zip(setters, names, strict=True)):
        env[f"set_{i}"] = setter
        lines.append(f"    set_{i}(self, {var})")
    if cls._check is not Structure._check:
        lines.append("    self._check()")
    return lines


def _generate_from_wire(
    cls: type[Any], schema: tuple[tuple[str, FieldType], ...], label: str
) -> None:
    """Install ``cls._from_wire(obj, where)``: what ``from_wire`` does, generated per class.

    It runs the same converters and the same checks, in the same order and
    with the same paths, as ``cls(**fields)`` followed by ``__post_init__``,
    but on local variables, and fills the slots directly instead of going
    through the frozen dataclass's ``__init__`` (one ``object.__setattr__``
    per field): decoding a pledge is twice as fast. A class whose fields are
    not all plain slots keeps the generic path.
    """
    setters = [_slot_setter(cls, name) for name, _ in schema]
    converters = {name: (convert, path) for name, convert, path in cls._converters}
    if any(setter is None for setter in setters):
        return
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_wrong_shape": _wrong_shape}
    names = [f"f{i}" for i in range(len(schema))]
    lines = [
        "def _from_wire(obj, where):",
        f"    if type(obj) is not tuple or len(obj) != {len(schema)}:",
        "        raise _wrong_shape(_cls, where)",
    ]
    lines.append(f"    ({', '.join(names)},) = obj")
    for i, (name, _) in enumerate(schema):
        if name in converters:
            env[f"convert_{i}"], path = converters[name]
            lines.append(f"    f{i} = convert_{i}(f{i}, {path!r})")
    lines.extend(_check_lines(schema, label, names, env))
    lines.append("    self = _new(_cls)")
    lines.extend(_fill_lines(cls, setters, names, env))
    lines.append("    return self")
    exec("\n".join(lines), env)
    cls._from_wire = staticmethod(env["_from_wire"])


def structure(label: str) -> Callable[[type[T]], type[T]]:
    """Record a frozen dataclass's field types, in declaration (wire) order.

    Also installs a ``__post_init__`` generated for the class (as dataclasses
    itself does): checking a message is on the path of every decode, and the
    generated code is twice as fast as a loop over the fields.
    """

    def wrap(cls: type[T]) -> type[T]:
        schema: tuple[tuple[str, FieldType], ...] = tuple(
            (f.name, f.metadata[_SCHEMA_KEY])
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
        cls._schema = schema  # type: ignore[attr-defined]
        cls._label = label  # type: ignore[attr-defined]
        cls._names = tuple(name for name, _ in schema)  # type: ignore[attr-defined]
        cls._checks = tuple(  # type: ignore[attr-defined]
            (name, ftype.check, f"{label}.{name}") for name, ftype in schema
        )
        cls._converters = tuple(  # type: ignore[attr-defined]
            (name, ftype.from_wire, f"{label}.{name}")
            for name, ftype in schema
            if not isinstance(ftype, _PASS_THROUGH)
            and not (isinstance(ftype, Opt) and isinstance(ftype.inner, _PASS_THROUGH))
        )
        _generate_post_init(cls, schema, label)
        _generate_from_wire(cls, schema, label)
        _generate_to_wire(cls, schema)
        _generate_init(cls, schema, label)
        return cls

    return wrap


_GENERATED_NAMES = frozenset(
    {"self", "type", "len", "check", "set", "default", "choices", "pattern"}
)


def _generate_init(cls: type[Any], schema: tuple[tuple[str, FieldType], ...], label: str) -> None:
    """Replace the dataclass ``__init__`` with one that checks, then fills the slots directly.

    A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``
    and then calls ``__post_init__``, which reads every field back to check it:
    building a message (every move of a negotiation builds one) spends most of
    its time there. This ``__init__`` takes the same keyword-only arguments
    with the same defaults, runs the same checks in the same order as
    ``__post_init__``, and sets each slot once (``dataclasses.replace`` calls
    it too). A class whose fields are not all plain slots, with a default
    factory, or with a field named like the generated code's own names keeps
    the dataclass ``__init__`` and its ``__post_init__``.
    """
    setters = [_slot_setter(cls, name) for name, _ in schema]
    declared = {f.name: f for f in dataclasses.fields(cls)}
    if (
        any(setter is None for setter in setters)
        or any(f.default_factory is not dataclasses.MISSING for f in declared.values())
        # The generated code names these itself (the fast tests call type and len).
        or any(name.split("_")[0] in _GENERATED_NAMES for name in declared)
    ):
        return
    env: dict[str, Any] = {}
    names = [name for name, _ in schema]
    params = []
    for i, name in enumerate(names):
        default = declared[name].default
        if default is dataclasses.MISSING:
            params.append(name)
        else:
            env[f"default_{i}"] = default
            params.append(f"{name}=default_{i}")
    body = _check_lines(schema, label, names, env) + _fill_lines(cls, setters, names, env)
    if not body:
        body.append("    pass")
    lines = [f"def __init__(self, *, {', '.join(params)}):" if params else "def __init__(self):"]
    exec("\n".join(lines + body), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init


def _generate_to_wire(cls: type[Any], schema: tuple[tuple[str, FieldType], ...]) -> None:
    """Install ``cls._to_wire(value)``: the wire array, reading each field once.

    Sealing runs this for every message; a generated list display that reads
    pass-through fields directly is three times as fast as a loop calling
    each field type's ``to_wire``.
    """
    env: dict[str, Any] = {}
    items = []
    for i, (name, ftype) in enumerate(schema):
        if isinstance(ftype, _PASS_THROUGH) or (
            isinstance(ftype, Opt) and isinstance(ftype.inner, _PASS_THROUGH)
        ):
            items.append(f"value.{name}")
        else:
            env[f"wire_{i}"] = ftype.to_wire
            items.append(f"wire_{i}(value.{name})")
    exec(f"def _to_wire(value):\n    return [{', '.join(items)}]", env)
    cls._to_wire = staticmethod(env["_to_wire"])


def to_wire(value: Any) -> list[Any]:
    """The msgpack-ready array of a structure."""
    wire: list[Any] = value._to_wire(value)
    return wire


def _wrong_shape(cls: type[Any], where: str) -> InvalidField:
    return InvalidField(
        f"{where} must be an array of exactly {len(cls._names)} fields",
        reason="wrong-type",
        field=where,
    )


def from_wire(cls: type[T], obj: Any, path: str | None = None) -> T:
    """Build a structure from a decoded array, checking every field as ``__post_init__`` does."""
    where = path if path is not None else cls._label  # type: ignore[attr-defined]
    fast = cls.__dict__.get("_from_wire")
    if fast is not None:
        built: T = fast.__func__(obj, where)
        return built
    names: tuple[str, ...] = cls._names  # type: ignore[attr-defined]
    if type(obj) is not tuple or len(obj) != len(names):
        raise _wrong_shape(cls, where)
    kwargs = dict(zip(names, obj, strict=True))
    for name, convert, field_path in cls._converters:  # type: ignore[attr-defined]
        kwargs[name] = convert(kwargs[name], field_path)
    return cls(**kwargs)
