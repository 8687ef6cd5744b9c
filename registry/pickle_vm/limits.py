"""Bounds that keep hostile pickles finite in time and memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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

# Opcodes one audited file may cost in all (every pickle in it run or scanned: a compressed
# stream's pickles one after another, an .npz's members, a zip's pickles, the scan after a stop):
# one pickle at the opcode limit and its scan after the stop fit, as before; five of them in a
# 233 KB .pkl.gz do not (each its own budget: 105 s).
FILE_OPCODES = DEFAULT_LIMITS.max_opcodes + 2_000_000


@dataclass
class OpcodeBudget:
    """The opcodes left to every pickle of one file together (:func:`file_budget`)."""

    total: int
    left: int
    spent: bool = False  # a run or a scan stopped because the budget ran out

    def charge(self, opcodes: int) -> None:
        self.left = max(0, self.left - opcodes)


_FILE_BUDGET: ContextVar[OpcodeBudget | None] = ContextVar("modelsafe_file_opcodes", default=None)


def current_budget() -> OpcodeBudget | None:
    """The budget of the file being audited in this thread or task (None outside an audit)."""
    return _FILE_BUDGET.get()


@contextmanager
def file_budget() -> Iterator[OpcodeBudget]:
    """Every pickle run (:func:`~modelsafe.registry.pickle_vm.machine.run_pickle`) inside the
    block shares one budget of :data:`FILE_OPCODES`: past it a run stops with a ``limit``
    error and the rest of its stream is only searched for names (C speed). A block inside
    another one has a budget of its own (a folder's files are audited one by one)."""
    budget = OpcodeBudget(FILE_OPCODES, FILE_OPCODES)
    token = _FILE_BUDGET.set(budget)
    try:
        yield budget
    finally:
        _FILE_BUDGET.reset(token)
