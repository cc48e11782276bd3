"""Generic engine for binary formats declared as tables of fields.

A message format is a :class:`Struct`: an ordered list of elements (bit fields,
AFI-encoded addresses, byte strings, lists of sub-structures, optional parts).
One decoder and one encoder walk any such table, so every LISP message in
:mod:`pacao.lisp.messages` is data, not code.  Decoding failures of any kind
surface as :class:`LispDecodeError` (with the byte offset and the field name);
encoding failures as :class:`LispEncodeError`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast


class LispDecodeError(ValueError):
    """Bytes that are not a valid message: where (byte offset), which field, why."""

    def __init__(self, offset: int, field: str, reason: str) -> None:
        self.offset = offset
        self.field = field
        self.reason = reason
        super().__init__(f"offset {offset}: {field}: {reason}")


class LispEncodeError(ValueError):
    """A value that cannot be put on the wire (too wide, wrong type, inconsistent)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Reader:
    """A cursor over a received buffer that reports truncation as a decode error."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise LispDecodeError(self.pos, field, f"needs {n} bytes, {self.end - self.pos} left")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def peek_u8(self, field: str) -> int:
        if self.pos >= self.end:
            raise LispDecodeError(self.pos, field, "needs 1 byte, 0 left")
        return self.buf[self.pos]

    @property
    def left(self) -> int:
        return self.end - self.pos


class Writer:
    """Accumulates encoded bytes."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def put(self, data: bytes) -> None:
        self.parts.append(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


# --------------------------------------------------------------------------- elements


@dataclass(frozen=True)
class Bits:
    """An unsigned big-endian field of `width` bits.

    `const`: the value is fixed (e.g. the message type) and checked on decode.
    `count_of`/`length_of`: the value is derived on encode from the length of
    another element (a List or Bytes), minus `bias`; such fields are not
    attributes of the decoded object.
    """

    name: str
    width: int
    meaning: str
    const: int | None = None
    count_of: str | None = None
    length_of: str | None = None
    bias: int = 0
    boolean: bool = False

    @property
    def derived(self) -> bool:
        return self.const is not None or self.count_of is not None or self.length_of is not None


def Flag(name: str, meaning: str) -> Bits:
    """A one-bit field decoded as bool."""
    return Bits(name, 1, meaning, boolean=True)


class Codec(Protocol):
    """A custom variable-length element (e.g. an AFI-encoded address)."""

    def decode(self, r: Reader, field: str) -> Any: ...

    def encode(self, w: Writer, value: Any, field: str) -> None: ...


@dataclass(frozen=True)
class Custom:
    """An element whose wire form is handled by a :class:`Codec`."""

    name: str
    codec: Codec
    meaning: str


@dataclass(frozen=True)
class Bytes:
    """A byte string whose length is a constant or the value of an earlier field."""

    name: str
    length: int | str
    meaning: str


@dataclass(frozen=True)
class List:
    """`count` (an earlier field's value, plus `bias`) repetitions of a sub-structure."""

    name: str
    element: Struct
    count: str
    meaning: str
    bias: int = 0


@dataclass(frozen=True)
class If:
    """Elements present only when an earlier field is non-zero (e.g. the I bit)."""

    flag: str
    elements: tuple[Element, ...]


@dataclass(frozen=True)
class Tail:
    """Whatever bytes remain (kept so that re-encoding is byte-exact)."""

    name: str
    meaning: str


class Sub:
    """A codec that embeds a whole :class:`Struct` as one element."""

    def __init__(self, struct: Struct) -> None:
        self.struct = struct

    def decode(self, r: Reader, field: str) -> Any:
        return self.struct.decode(r)

    def encode(self, w: Writer, value: Any, field: str) -> None:
        if value is None:
            raise LispEncodeError(field, f"{self.struct.name} required")
        self.struct.encode(value, w)


Element = Bits | Custom | Bytes | List | If | Tail


@dataclass(frozen=True)
class _BitRun:
    """Consecutive Bits fields packed into whole bytes, decoded with one int conversion."""

    fields: tuple[Bits, ...]
    size: int
    shifts: tuple[int, ...]


Check = Callable[[Mapping[str, Any]], tuple[str, str] | None]


class Struct:
    """A format declared as a table of elements, built into objects by `factory`.

    `factory` is called with the non-derived field values as keyword
    arguments (a dataclass whose field names match the table, usually);
    encoding reads the same names as attributes of the object.
    `check` validates cross-field constraints after decoding and returns
    (field, reason) on failure.  With `single`, the structure stands for the
    value of that one element (e.g. a list of bare addresses).
    """

    def __init__(
        self,
        name: str,
        elements: Sequence[Element],
        factory: Callable[..., Any] | None = None,
        check: Check | None = None,
        single: str | None = None,
    ) -> None:
        self.name = name
        self.elements = tuple(elements)
        self.factory = factory
        self.check = check
        self.single = single
        self._plan = _compile(name, self.elements)
        self._derived = _derived_names(self._plan)
        self._fast_decode: Callable[[Reader], dict[str, Any]] | None = None
        self._fast_encode: dict[str, Callable[[Any, Writer], None]] = {}
        self._fields: frozenset[str] | None = None
        if factory is not None and dataclasses.is_dataclass(factory):
            self._fields = frozenset(f.name for f in dataclasses.fields(factory))

    # ---- introspection (used by docs and tests)
    def fields(self) -> list[Element]:
        out: list[Element] = []
        for el in self.elements:
            if isinstance(el, If):
                out.extend(el.elements)
            else:
                out.append(el)
        return out

    # ---- decoding
    def decode(self, r: Reader) -> Any:
        start = r.pos
        fast = self._fast_decode
        if fast is None:
            fast = self._fast_decode = _compile_decoder(self)
        try:
            values = fast(r)
        except _Fail:
            r.pos = start
            return self.decode_slow(r)
        if self.check is not None and self.check(values) is not None:
            r.pos = start
            return self.decode_slow(r)
        return self.build(values)

    def decode_slow(self, r: Reader) -> Any:
        """The table interpreter: the reference, and the source of precise errors."""
        values: dict[str, Any] = {}
        offsets: dict[str, int] = {}
        _decode_plan(self.name, self._plan, r, values, offsets)
        if self.check is not None:
            bad = self.check(values)
            if bad is not None:
                where = offsets.get(bad[0], r.pos)
                raise LispDecodeError(where, f"{self.name}.{bad[0]}", bad[1])
        return self.build({k: v for k, v in values.items() if k not in self._derived})

    def build(self, values: dict[str, Any]) -> Any:
        """Object from the non-derived field values."""
        if self.single is not None:
            return values[self.single]
        factory = self.factory
        if factory is None:
            return values
        if self._fields is not None and len(values) == len(self._fields):
            # every dataclass field decoded: skip __init__ (frozen setattr is slow)
            obj: Any = object.__new__(cast(type, factory))
            obj.__dict__.update(values)
            return obj
        try:
            return factory(**values)
        except (TypeError, ValueError) as exc:  # a factory rejecting decoded values
            raise LispDecodeError(0, self.name, str(exc)) from None

    def decode_bytes(self, data: bytes) -> Any:
        return self.decode(Reader(data))

    # ---- encoding
    def encode(self, obj: Any, w: Writer | None = None) -> bytes:
        writer = Writer() if w is None else w
        mode = "self" if self.single is not None else "item" if isinstance(obj, Mapping) else "attr"
        fast = self._fast_encode.get(mode)
        if fast is None:
            fast = self._fast_encode[mode] = _compile_encoder(self, mode)
        try:
            fast(obj, writer)
        except AttributeError as exc:
            raise LispEncodeError(self.name, f"missing field ({exc})") from None
        return writer.getvalue() if w is None else b""

    def encode_slow(self, obj: Any) -> bytes:
        """The table interpreter's encoding (reference for the compiled encoder)."""
        writer = Writer()
        get: Callable[[str], Any]
        if self.single is not None:

            def get(name: str) -> Any:
                return obj

        elif isinstance(obj, Mapping):
            get = obj.__getitem__
        else:

            def get(name: str) -> Any:
                return getattr(obj, name)

        _encode_plan(self.name, self._plan, get, writer)
        return writer.getvalue()


Plan = tuple["_BitRun | Custom | Bytes | List | _IfPlan | Tail", ...]


@dataclass(frozen=True)
class _IfPlan:
    flag: str
    plan: Plan


def _compile(name: str, elements: Sequence[Element]) -> Plan:
    out: list[_BitRun | Custom | Bytes | List | _IfPlan | Tail] = []
    run: list[Bits] = []

    def flush() -> None:
        if not run:
            return
        total = sum(f.width for f in run)
        if total % 8:
            raise ValueError(f"{name}: bit fields {[f.name for f in run]} are not byte-aligned")
        shifts: list[int] = []
        left = total
        for f in run:
            left -= f.width
            shifts.append(left)
        out.append(_BitRun(tuple(run), total // 8, tuple(shifts)))
        run.clear()

    for el in elements:
        if isinstance(el, Bits):
            run.append(el)
            continue
        flush()
        if isinstance(el, If):
            out.append(_IfPlan(el.flag, _compile(name, el.elements)))
        else:
            out.append(el)
    flush()
    return tuple(out)


def _derived_names(plan: Plan) -> frozenset[str]:
    names: set[str] = set()
    for step in plan:
        if isinstance(step, _BitRun):
            names.update(f.name for f in step.fields if f.derived)
        elif isinstance(step, _IfPlan):
            names.update(_derived_names(step.plan))
    return frozenset(names)


def _decode_plan(
    sname: str, plan: Plan, r: Reader, values: dict[str, Any], offsets: dict[str, int]
) -> None:
    for step in plan:
        offsets[getattr(step, "name", "")] = r.pos
        if isinstance(step, _BitRun):
            start = r.pos
            if r.left < step.size:
                raise LispDecodeError(
                    start, f"{sname}.{step.fields[0].name}", f"truncated ({r.left} bytes left)"
                )
            word = int.from_bytes(r.take(step.size, sname), "big")
            for f, shift in zip(step.fields, step.shifts, strict=True):
                v = (word >> shift) & ((1 << f.width) - 1)
                if f.const is not None and v != f.const:
                    raise LispDecodeError(start, f"{sname}.{f.name}", f"is {v}, expected {f.const}")
                values[f.name] = bool(v) if f.boolean else v
                offsets[f.name] = start + (step.size * 8 - shift - f.width) // 8
        elif isinstance(step, Custom):
            values[step.name] = step.codec.decode(r, f"{sname}.{step.name}")
        elif isinstance(step, Bytes):
            n = step.length if isinstance(step.length, int) else values[step.length]
            values[step.name] = r.take(n, f"{sname}.{step.name}")
        elif isinstance(step, List):
            n = values[step.count] + step.bias
            values[step.name] = tuple(step.element.decode(r) for _ in range(n))
        elif isinstance(step, _IfPlan):
            if values[step.flag]:
                _decode_plan(sname, step.plan, r, values, offsets)
            else:
                _absent(step.plan, values)
        else:  # Tail
            values[step.name] = r.take(r.left, f"{sname}.{step.name}")


def _absent(plan: Plan, values: dict[str, Any]) -> None:
    for step in plan:
        if isinstance(step, _BitRun):
            for f in step.fields:
                values[f.name] = 0
        elif isinstance(step, Bytes | Custom):
            values[step.name] = None
        elif isinstance(step, List):
            values[step.name] = ()
        elif isinstance(step, _IfPlan):
            _absent(step.plan, values)


def _sized(get: Callable[[str], Any], name: str) -> int:
    v = get(name)
    return 0 if v is None else len(v)


def _encode_plan(sname: str, plan: Plan, get: Callable[[str], Any], w: Writer) -> None:
    # Derived fields (counts, lengths) may refer to elements that come later.
    for step in plan:
        if isinstance(step, _BitRun):
            word = 0
            for f, shift in zip(step.fields, step.shifts, strict=True):
                if f.const is not None:
                    v = f.const
                elif f.count_of is not None:
                    v = _sized(get, f.count_of) - f.bias
                elif f.length_of is not None:
                    v = _sized(get, f.length_of) - f.bias
                else:
                    v = get(f.name)
                    if isinstance(v, bool):
                        v = int(v)
                if not isinstance(v, int) or v < 0 or v >> f.width:
                    raise LispEncodeError(
                        f"{sname}.{f.name}", f"{v!r} does not fit in {f.width} unsigned bits"
                    )
                word |= v << shift
            w.put(word.to_bytes(step.size, "big"))
        elif isinstance(step, Custom):
            step.codec.encode(w, get(step.name), f"{sname}.{step.name}")
        elif isinstance(step, Bytes):
            data = get(step.name)
            if not isinstance(data, bytes | bytearray):
                raise LispEncodeError(f"{sname}.{step.name}", f"expected bytes, got {data!r}")
            if isinstance(step.length, int) and len(data) != step.length:
                raise LispEncodeError(
                    f"{sname}.{step.name}", f"must be {step.length} bytes, got {len(data)}"
                )
            w.put(bytes(data))
        elif isinstance(step, List):
            for item in get(step.name):
                step.element.encode(item, w)
        elif isinstance(step, _IfPlan):
            if get(step.flag):
                _encode_plan(sname, step.plan, get, w)
        else:  # Tail
            data = get(step.name)
            if data:
                w.put(bytes(data))


def field_table(struct: Struct) -> list[tuple[str, str, str]]:
    """(name, width, meaning) rows of a format, for documentation."""
    rows: list[tuple[str, str, str]] = []
    for el in struct.fields():
        if isinstance(el, Bits):
            meaning = el.meaning if el.const is None else f"{el.meaning} (= {el.const})"
            rows.append((el.name, f"{el.width} bit{'s' if el.width > 1 else ''}", meaning))
        elif isinstance(el, Bytes):
            width = f"{el.length} bytes"
            rows.append((el.name, width, el.meaning))
        elif isinstance(el, List):
            rows.append((el.name, f"list of {el.element.name}", el.meaning))
        elif isinstance(el, Custom):
            width = el.codec.struct.name if isinstance(el.codec, Sub) else "AFI + address"
            rows.append((el.name, width, el.meaning))
        elif isinstance(el, Tail):
            rows.append((el.name, "rest", el.meaning))
    return rows


def replace(obj: Any, **changes: Any) -> Any:
    """dataclasses.replace, typed loosely for the frozen message classes."""
    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------- compiler
#
# The interpreter above (_decode_plan/_encode_plan) is the reference.  For speed
# each Struct is also compiled from its table into straight-line Python (one
# function to decode, one per access mode to encode).  The compiled decoder
# raises _Fail at the first problem and the interpreter is then re-run on the
# same bytes to produce the precise LispDecodeError (offset and field), so both
# paths always agree on errors; tests check they agree on results.


class _Fail(Exception):
    """Compiled decoder bail-out; the interpreter reports the real error."""


def _compile_decoder(struct: Struct) -> Callable[[Reader], dict[str, Any]]:
    lines = ["def _decode(r):", "    buf = r.buf; p = r.pos; end = r.end; v = {}"]
    env: dict[str, Any] = {"_Fail": _Fail}
    refs: dict[str, str] = {}
    seq = itertools.count()

    def emit(plan: Plan, ind: str) -> None:
        for step in plan:
            if isinstance(step, _BitRun):
                total = step.size * 8
                lines.append(f"{ind}if end - p < {step.size}: raise _Fail")
                lines.append(f"{ind}w = int.from_bytes(buf[p:p + {step.size}], 'big')")
                for f, shift in zip(step.fields, step.shifts, strict=True):
                    expr = f"(w >> {shift})" if shift else "w"
                    if shift + f.width < total:
                        expr = f"({expr} & {(1 << f.width) - 1})"
                    if f.const is not None:
                        lines.append(f"{ind}if {expr} != {f.const}: raise _Fail")
                        continue
                    if f.boolean:
                        expr = f"{expr} != 0"
                    if f.derived:
                        local = f"d{next(seq)}"
                        lines.append(f"{ind}{local} = {expr}")
                        refs[f.name] = local
                    else:
                        lines.append(f"{ind}v[{f.name!r}] = {expr}")
                        refs[f.name] = f"v[{f.name!r}]"
                lines.append(f"{ind}p += {step.size}")
            elif isinstance(step, Custom):
                c = f"c{next(seq)}"
                env[c] = step.codec
                field = f"{struct.name}.{step.name}"
                lines.append(
                    f"{ind}r.pos = p; v[{step.name!r}] = {c}.decode(r, {field!r}); p = r.pos"
                )
                refs[step.name] = f"v[{step.name!r}]"
            elif isinstance(step, Bytes):
                n = str(step.length) if isinstance(step.length, int) else refs[step.length]
                lines.append(f"{ind}n = {n}")
                lines.append(f"{ind}if end - p < n: raise _Fail")
                lines.append(f"{ind}v[{step.name!r}] = buf[p:p + n]; p += n")
                refs[step.name] = f"v[{step.name!r}]"
            elif isinstance(step, List):
                s = f"s{next(seq)}"
                env[s] = step.element.decode
                count = refs[step.count] + (f" + {step.bias}" if step.bias else "")
                lines.append(f"{ind}r.pos = p")
                lines.append(f"{ind}v[{step.name!r}] = tuple([{s}(r) for _ in range({count})])")
                lines.append(f"{ind}p = r.pos")
                refs[step.name] = f"v[{step.name!r}]"
            elif isinstance(step, _IfPlan):
                lines.append(f"{ind}if {refs[step.flag]}:")
                emit(step.plan, ind + "    ")
                lines.append(f"{ind}else:")
                absent: dict[str, Any] = {}
                _absent(step.plan, absent)
                for name, value in absent.items():
                    lines.append(f"{ind}    v[{name!r}] = {value!r}")
                    refs[name] = f"v[{name!r}]"
                lines.append(f"{ind}    pass")
            else:  # Tail
                lines.append(f"{ind}v[{step.name!r}] = buf[p:end]; p = end")

    emit(struct._plan, "    ")
    lines += ["    r.pos = p", "    return v"]
    exec("\n".join(lines), env)
    fn: Callable[[Reader], dict[str, Any]] = env["_decode"]
    return fn


def _compile_encoder(struct: Struct, mode: str) -> Callable[[Any, Writer], None]:
    """mode: 'attr' (objects), 'item' (mappings) or 'self' (single-value structs)."""

    def access(name: str) -> str:
        if mode == "attr":
            return f"o.{name}"
        if mode == "item":
            return f"o[{name!r}]"
        return "o"

    lines = ["def _encode(o, wr):", "    ap = wr.parts.append"]
    env: dict[str, Any] = {"LispEncodeError": LispEncodeError, "bytes": bytes}
    seq = itertools.count()

    def emit(plan: Plan, ind: str) -> None:
        for step in plan:
            if isinstance(step, _BitRun):
                lines.append(f"{ind}w = 0")
                for f, shift in zip(step.fields, step.shifts, strict=True):
                    field = f"{struct.name}.{f.name}"
                    if f.const is not None:
                        lines.append(f"{ind}w |= {f.const << shift}")
                        continue
                    if f.count_of is not None or f.length_of is not None:
                        ref = access(f.count_of or f.length_of or "")
                        lines.append(f"{ind}x = {ref}")
                        lines.append(f"{ind}x = (0 if x is None else len(x)) - {f.bias}")
                    else:
                        lines.append(f"{ind}x = {access(f.name)}")
                        lines.append(
                            f"{ind}if x.__class__ is not int and x.__class__ is not bool: "
                            f"raise LispEncodeError({field!r}, f'{{x!r}} is not an integer')"
                        )
                    lines.append(
                        f"{ind}if x < 0 or x >> {f.width}: raise LispEncodeError("
                        f"{field!r}, f'{{x!r}} does not fit in {f.width} unsigned bits')"
                    )
                    lines.append(f"{ind}w |= x << {shift}" if shift else f"{ind}w |= x")
                lines.append(f"{ind}ap(w.to_bytes({step.size}, 'big'))")
            elif isinstance(step, Custom):
                c = f"c{next(seq)}"
                env[c] = step.codec
                lines.append(
                    f"{ind}{c}.encode(wr, {access(step.name)}, {struct.name}.{step.name!r})"
                )
                lines[-1] = lines[-1].replace(
                    f"{struct.name}.{step.name!r}", repr(f"{struct.name}.{step.name}")
                )
            elif isinstance(step, Bytes):
                field = f"{struct.name}.{step.name}"
                lines.append(f"{ind}x = {access(step.name)}")
                lines.append(
                    f"{ind}if x.__class__ is not bytes and not isinstance(x, (bytes, bytearray)): "
                    f"raise LispEncodeError({field!r}, f'expected bytes, got {{x!r}}')"
                )
                if isinstance(step.length, int):
                    lines.append(
                        f"{ind}if len(x) != {step.length}: raise LispEncodeError({field!r}, "
                        f"f'must be {step.length} bytes, got {{len(x)}}')"
                    )
                lines.append(f"{ind}ap(bytes(x))")
            elif isinstance(step, List):
                e = f"e{next(seq)}"
                env[e] = step.element.encode
                lines.append(f"{ind}for it in {access(step.name)}:")
                lines.append(f"{ind}    if it.__class__ is bytes: ap(it)")
                lines.append(f"{ind}    else: {e}(it, wr)")
            elif isinstance(step, _IfPlan):
                lines.append(f"{ind}if {access(step.flag)}:")
                emit(step.plan, ind + "    ")
                lines.append(f"{ind}    pass")
            else:  # Tail
                lines.append(f"{ind}x = {access(step.name)}")
                lines.append(f"{ind}if x: ap(bytes(x))")

    emit(struct._plan, "    ")
    lines.append("    return None")
    exec("\n".join(lines), env)
    fn: Callable[[Any, Writer], None] = env["_encode"]
    return fn
