"""The pickle opcode table (protocols 0-5): each opcode byte and how its argument is laid out.

Written from the pickle format itself (``pickletools`` documents it); nothing here is executed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Opcode:
    """One opcode: its name, the protocol that introduced it and how to read its argument.

    ``arg`` is one of: ``none``, ``u1``/``u2``/``i4``/``u4`` (fixed-size integer), ``f8``
    (big-endian double), ``line`` (text up to a newline), ``line2`` (two lines: module and name),
    ``len1``/``len4``/``slen4``/``len8`` (a length prefix then that many bytes; ``slen4`` signed).
    """

    code: int
    name: str
    proto: int
    arg: str


_TABLE: tuple[tuple[bytes, str, int, str], ...] = (
    (b"(", "MARK", 0, "none"),
    (b".", "STOP", 0, "none"),
    (b"0", "POP", 0, "none"),
    (b"1", "POP_MARK", 1, "none"),
    (b"2", "DUP", 0, "none"),
    (b"F", "FLOAT", 0, "line"),
    (b"I", "INT", 0, "line"),
    (b"J", "BININT", 1, "i4"),
    (b"K", "BININT1", 1, "u1"),
    (b"L", "LONG", 0, "line"),
    (b"M", "BININT2", 1, "u2"),
    (b"N", "NONE", 0, "none"),
    (b"P", "PERSID", 0, "line"),
    (b"Q", "BINPERSID", 1, "none"),
    (b"R", "REDUCE", 0, "none"),
    (b"S", "STRING", 0, "line"),
    (b"T", "BINSTRING", 1, "slen4"),
    (b"U", "SHORT_BINSTRING", 1, "len1"),
    (b"V", "UNICODE", 0, "line"),
    (b"X", "BINUNICODE", 1, "len4"),
    (b"a", "APPEND", 0, "none"),
    (b"b", "BUILD", 0, "none"),
    (b"c", "GLOBAL", 0, "line2"),
    (b"d", "DICT", 0, "none"),
    (b"}", "EMPTY_DICT", 1, "none"),
    (b"e", "APPENDS", 1, "none"),
    (b"g", "GET", 0, "line"),
    (b"h", "BINGET", 1, "u1"),
    (b"i", "INST", 0, "line2"),
    (b"j", "LONG_BINGET", 1, "u4"),
    (b"l", "LIST", 0, "none"),
    (b"]", "EMPTY_LIST", 1, "none"),
    (b"o", "OBJ", 1, "none"),
    (b"p", "PUT", 0, "line"),
    (b"q", "BINPUT", 1, "u1"),
    (b"r", "LONG_BINPUT", 1, "u4"),
    (b"s", "SETITEM", 0, "none"),
    (b"t", "TUPLE", 0, "none"),
    (b")", "EMPTY_TUPLE", 1, "none"),
    (b"u", "SETITEMS", 1, "none"),
    (b"G", "BINFLOAT", 1, "f8"),
    (b"\x80", "PROTO", 2, "u1"),
    (b"\x81", "NEWOBJ", 2, "none"),
    (b"\x82", "EXT1", 2, "u1"),
    (b"\x83", "EXT2", 2, "u2"),
    (b"\x84", "EXT4", 2, "i4"),
    (b"\x85", "TUPLE1", 2, "none"),
    (b"\x86", "TUPLE2", 2, "none"),
    (b"\x87", "TUPLE3", 2, "none"),
    (b"\x88", "NEWTRUE", 2, "none"),
    (b"\x89", "NEWFALSE", 2, "none"),
    (b"\x8a", "LONG1", 2, "len1"),
    (b"\x8b", "LONG4", 2, "slen4"),
    (b"B", "BINBYTES", 3, "len4"),
    (b"C", "SHORT_BINBYTES", 3, "len1"),
    (b"\x8c", "SHORT_BINUNICODE", 4, "len1"),
    (b"\x8d", "BINUNICODE8", 4, "len8"),
    (b"\x8e", "BINBYTES8", 4, "len8"),
    (b"\x8f", "EMPTY_SET", 4, "none"),
    (b"\x90", "ADDITEMS", 4, "none"),
    (b"\x91", "FROZENSET", 4, "none"),
    (b"\x92", "NEWOBJ_EX", 4, "none"),
    (b"\x93", "STACK_GLOBAL", 4, "none"),
    (b"\x94", "MEMOIZE", 4, "none"),
    (b"\x95", "FRAME", 4, "u8"),
    (b"\x96", "BYTEARRAY8", 5, "len8"),
    (b"\x97", "NEXT_BUFFER", 5, "none"),
    (b"\x98", "READONLY_BUFFER", 5, "none"),
)

OPCODES: dict[int, Opcode] = {
    code[0]: Opcode(code[0], name, proto, arg) for code, name, proto, arg in _TABLE
}

HIGHEST_PROTOCOL = 5

# Opcodes that reach a callable or an attribute of an object: every one is recorded.
CALL_OPCODES = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}
    | {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}
)
