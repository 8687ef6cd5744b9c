"""Bounds that keep hostile pickles finite in time and memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Hard limits on one pickle run; exceeding any is an error finding, not a crash."""

    max_opcodes: int = 50_000_000
    max_memo: int = 5_000_000
    max_stack: int = 1_000_000  # values on the stack, all MARK segments together
    max_marks: int = 100_000
    max_line: int = 1 << 20  # text arguments (protocol 0)
    inline_bytes: int = 1 << 20  # larger bytes/str arguments are kept as LargeBytes
    max_walk_nodes: int = 5_000_000  # nodes visited when interpreting the result
    # Estimated bytes of the symbolic objects a run builds (containers, records, numbers, memo
    # slots; string *contents* are bounded by the stream itself and not counted): a tiny deflated
    # stream of millions of EMPTY_SET / EMPTY_LIST opcodes stops here, not at the machine's RAM.
    # Real checkpoints use a few MiB (SD 1.5: ~10k objects; SDXL: ~2,500 tensors).
    max_object_bytes: int = 256 << 20


DEFAULT_LIMITS = Limits()
