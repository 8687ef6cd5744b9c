"""Bounds that keep hostile pickles finite in time and memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Hard limits on one pickle run; exceeding any is an error finding, not a crash."""

    max_opcodes: int = 50_000_000
    max_memo: int = 5_000_000
    max_stack: int = 1_000_000
    max_marks: int = 100_000
    max_line: int = 1 << 20  # text arguments (protocol 0)
    inline_bytes: int = 1 << 20  # larger bytes/str arguments are kept as LargeBytes
    max_walk_nodes: int = 5_000_000  # nodes visited when interpreting the result


DEFAULT_LIMITS = Limits()
