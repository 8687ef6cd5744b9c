"""Symbolic values the pickle VM puts on its stack instead of real objects.

Nothing here is ever imported or called: a ``Global`` is only a name, a ``Call`` only a record of
what ``pickle.load`` would have called with which arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Global:
    """A reference to ``module.name`` (GLOBAL, STACK_GLOBAL, INST): a name, never the object."""

    module: str
    name: str
    pos: int

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False, slots=True)
class Call:
    """What ``pickle.load`` would get by calling ``func(*args, **kwargs)`` (REDUCE, NEWOBJ...).

    ``state`` is what BUILD would apply (None when no BUILD), ``dictitems`` and ``listitems`` what
    SETITEM(S)/APPEND(S) would add to the result (an OrderedDict, for instance).
    """

    func: Any
    args: tuple[Any, ...]
    kwargs: Any
    opcode: str
    pos: int
    state: Any = None
    dictitems: list[tuple[Any, Any]] = field(default_factory=list)
    listitems: list[Any] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class PersistentRef:
    """A persistent id (PERSID/BINPERSID): torch's reference to a storage."""

    pid: Any
    pos: int


@dataclass(eq=False, slots=True)
class SymDict:
    """A dict whose keys may be symbols (unhashable in real Python): kept as ordered pairs."""

    items: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class SymSet:
    """A set or frozenset (its members kept in order)."""

    items: list[Any] = field(default_factory=list)
    frozen: bool = False


@dataclass(frozen=True, slots=True)
class LargeBytes:
    """A bytes/str argument too large to copy: where it lies in the pickle."""

    offset: int
    length: int
    text: bool


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A number whose text (INT, LONG, FLOAT) is longer than the VM parses: CPython may read any
    value there (``1001`` after a megabyte of spaces), so nothing may be concluded from it."""

    offset: int
    length: int


class Buffer:
    """An out-of-band buffer (NEXT_BUFFER): its content is not in the file."""

    __slots__ = ()


def describe(value: Any) -> str:
    """A short, safe description of a symbolic value for messages."""
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, Call):
        return f"result of calling {describe(value.func)}"
    if isinstance(value, PersistentRef):
        return "a persistent reference"
    if isinstance(value, SymDict):
        return "a dict"
    if isinstance(value, SymSet):
        return "a set"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, tuple):
        return "a tuple"
    if isinstance(value, LargeBytes):
        return "a large string" if value.text else f"a {value.length}-byte value"
    if isinstance(value, Unparsed):
        return f"a number written in {value.length} bytes"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 200:
        return f"a {value.bit_length()}-bit integer"  # (repr fails past 4,300 digits)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
