"""The pickle virtual machine: runs an opcode stream against a symbolic stack and memo.

It never imports a module and never calls anything: GLOBAL pushes a :class:`Global` (a name),
REDUCE pushes a :class:`Call` (a record). Every reference to a callable is checked against the
allow-list where it appears; anything two unpicklers could read differently (frames that disagree
with opcodes, memo slots written twice) is a finding. Malformed input ends the run with an error
finding, never an exception; the findings gathered before the error are kept, because
``pickle.load`` would already have executed those opcodes.
"""

from __future__ import annotations

import codecs
import functools
import gc
import re
import struct
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field
from typing import Any

from modelsafe.registry.pickle_vm.allowlist import is_allowed
from modelsafe.registry.pickle_vm.known_globals import explain
from modelsafe.registry.pickle_vm.limits import DEFAULT_LIMITS, Limits, current_budget
from modelsafe.registry.pickle_vm.opcodes import HIGHEST_PROTOCOL, OPCODES, Opcode
from modelsafe.registry.pickle_vm.symbols import (
    Buffer,
    Call,
    Global,
    LargeBytes,
    PersistentRef,
    SymDict,
    SymSet,
    Unparsed,
    describe,
)
from modelsafe.types import Finding


@dataclass(frozen=True)
class GlobalSeen:
    """One reference to a callable in the stream, and whether the allow-list accepts it."""

    dotted: str
    opcode: str
    pos: int
    allowed: bool


@dataclass
class VMResult:
    """Everything one pickle run found. ``root`` is None when the stream could not be finished."""

    root: Any = None
    completed: bool = False
    protocol: int = 0
    start: int = 0
    end: int = 0  # offset just after STOP (or where the run stopped)
    # After a stop CPython may not share (a limit): where the scan on found this pickle's STOP,
    # so where the next pickle.load starts (-1: no STOP found, or the scan searched to the end).
    resume: int = -1
    opcodes: int = 0
    globals: list[GlobalSeen] = field(default_factory=list)
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (callable, opcode, pos)
    persistent_ids: list[PersistentRef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # The run (or its scan after a stop) stopped because the audited file's opcode budget
    # (:func:`~modelsafe.registry.pickle_vm.limits.file_budget`) ran out, not this pickle's own.
    budget_spent: bool = False

    @property
    def unsafe(self) -> bool:
        return any(f.severity == "unsafe" for f in self.findings)


class _Stop(Exception):
    """Ends a run: an error finding has been recorded."""


class _Machine:
    def __init__(
        self, data: Any, start: int, limits: Limits, label: str, base: int, scan: bool = True
    ) -> None:
        self.raw = data if hasattr(data, "find") else bytes(data)
        self.buf = memoryview(self.raw)
        self.n = len(self.buf)
        self.pos = start
        self.limits = limits
        self.label = label
        self.base = base
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.saved = 0  # values in the MARK segments below the current one
        self.cost = 0  # estimated bytes of the objects built so far (Limits.max_object_bytes)
        self.resume_at = -1  # where to scan on for names after an opcode stopped the run
        self.failed_op = ""  # the opcode that stopped it ("" when none ran: the opcode limit)
        self.memo: dict[int, Any] = {}
        self.frame_end = -1
        self.result = VMResult(start=start)
        self.scan_after_stop = scan
        self.scan_memo: dict[int, Any] = {}  # the scan's memo where its budget ran out
        self.scan_memo_len = 0  # len(memo) there, as CPython counts it (MEMOIZE writes it)
        self.budget = current_budget()  # the audited file's, shared by all its pickles

    # -- findings -----------------------------------------------------------------------------

    def where(self, pos: int) -> str:
        return f"{self.label} @ byte {self.base + pos}"

    def finding(self, severity: str, code: str, message: str, pos: int) -> None:
        self.result.findings.append(Finding(severity, code, message, self.where(pos)))

    def fail(self, code: str, message: str, pos: int) -> _Stop:
        self.finding("error", code, message, pos)
        return _Stop()

    # -- reading arguments ----------------------------------------------------------------------

    def take(self, size: int, op_pos: int) -> memoryview:
        if size < 0 or self.pos + size > self.n:
            raise self.fail("truncated", "the pickle ends in the middle of an opcode", op_pos)
        chunk = self.buf[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def line(self, op_pos: int) -> Any:
        """A text argument up to its newline; over ``max_line`` a :class:`LargeBytes` (not copied).

        CPython's readline has no length limit, so neither does the search for the newline (each
        byte is searched once: the position moves past it).
        """
        end = self.raw.find(b"\n", self.pos) - self.pos
        if end < 0:
            raise self.fail("truncated", "the pickle ends inside a text argument", op_pos)
        if end > self.limits.max_line:
            big = LargeBytes(self.base + self.pos, end, True)
            self.pos += end + 1
            return big
        text = bytes(self.buf[self.pos : self.pos + end])
        self.pos += end + 1
        return text

    def sized(self, size: int, op_pos: int, text: bool) -> Any:
        if size < 0:
            raise self.fail("bad-argument", "negative length", op_pos)
        if self.pos + size > self.n:
            raise self.fail("truncated", "the pickle ends inside a string argument", op_pos)
        if size > self.limits.inline_bytes:
            big = LargeBytes(self.base + self.pos, size, text)
            self.pos += size
            return big
        raw = bytes(self.take(size, op_pos))
        if not text:
            return raw
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail("bad-argument", "a string is not valid UTF-8", op_pos) from None

    def read_arg(self, op: Opcode, op_pos: int) -> Any:
        kind = op.arg
        if kind == "none":
            return None
        if kind == "u1":
            return self.take(1, op_pos)[0]
        if kind == "u2":
            return int.from_bytes(self.take(2, op_pos), "little")
        if kind == "u4":
            return int.from_bytes(self.take(4, op_pos), "little")
        if kind == "i4":
            return int.from_bytes(self.take(4, op_pos), "little", signed=True)
        if kind == "u8":
            return int.from_bytes(self.take(8, op_pos), "little")
        if kind == "f8":
            return struct.unpack(">d", self.take(8, op_pos))[0]
        if kind == "line":
            return self.line(op_pos)
        if kind == "line2":
            return self.line(op_pos), self.line(op_pos)
        if kind == "len1":
            return self.take(1, op_pos)[0]
        if kind == "len4":
            return int.from_bytes(self.take(4, op_pos), "little")
        if kind == "slen4":
            return int.from_bytes(self.take(4, op_pos), "little", signed=True)
        return int.from_bytes(self.take(8, op_pos), "little")  # len8

    # -- stack helpers --------------------------------------------------------------------------

    def push(self, value: Any, pos: int, fresh: bool = True) -> None:
        if len(self.stack) + self.saved >= self.limits.max_stack:
            raise self.fail("limit", "the pickle stack grows past the limit", pos)
        if fresh and value is not None and value is not True and value is not False:
            self.charge(_cost(value), pos)
        self.stack.append(value)

    def charge(self, size: int, pos: int) -> None:
        self.cost += size
        if self.cost > self.limits.max_object_bytes:
            raise self.fail(
                "limit",
                f"the pickle builds more objects than the limit (~{self.cost >> 20} MiB)",
                pos,
            )

    def pop(self, pos: int) -> Any:
        if not self.stack:
            raise self.fail("stack-underflow", "an opcode pops from an empty stack", pos)
        return self.stack.pop()

    def top(self, pos: int) -> Any:
        if not self.stack:
            raise self.fail("stack-underflow", "an opcode needs a value on an empty stack", pos)
        return self.stack[-1]

    def pop_mark(self, pos: int) -> list[Any]:
        if not self.marks:
            raise self.fail("no-mark", "an opcode needs a MARK that was never pushed", pos)
        items = self.stack
        self.stack = self.marks.pop()
        self.saved -= len(self.stack)
        return items

    # -- globals and calls ----------------------------------------------------------------------

    def make_global(self, module: Any, name: Any, opcode: str, pos: int) -> Global:
        if not isinstance(module, str) or not isinstance(name, str):
            self.finding(
                "unsafe",
                "dynamic-global",
                f"{opcode} takes its module/name from computed values "
                f"({describe(module)}, {describe(name)}): the callable cannot be known",
                pos,
            )
            return Global(str(describe(module)), str(describe(name)), pos)
        if self.result.protocol < 3:
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
        allowed = is_allowed(module, name)
        # (torch's unpickler resolves any name holding "Storage" without importing the module:
        # `ca b\nFloatStorage` loads there, so such a name is a global like any other)
        if not allowed and _NO_MODULE.search(module) and "Storage" not in name:
            # find_class imports the module first; a name no import can load (text that happens
            # to read as GLOBAL/INST: "harge, to any person obtaining a copy" in a licence file)
            # ends the unpickling right there, as it does in CPython.
            raise self.fail(
                "unimportable",
                f"{opcode} names module {module[:60]!r}, which is no module name: the "
                "unpickler's import fails here",
                pos,
            )
        dotted = f"{module}.{name}"
        self.result.globals.append(GlobalSeen(dotted, opcode, self.base + pos, allowed))
        if not allowed:
            self.finding(
                "unsafe",
                "global",
                f"{dotted} ({opcode}) is not in the allow-list: {explain(dotted)}",
                pos,
            )
        return Global(module, name, pos)

    def call(self, func: Any, args: Any, kwargs: Any, opcode: str, pos: int) -> Call:
        label = describe(func)
        self.result.calls.append((label, opcode, self.base + pos))
        if not isinstance(func, Global):
            self.finding(
                "unsafe",
                "call",
                f"{opcode} calls {label}, which is not a named callable from the allow-list",
                pos,
            )
        if not isinstance(args, tuple):
            self.finding(
                "unsafe", "call", f"{opcode} on {label} with arguments that are not a tuple", pos
            )
            args = (args,)
        return Call(func, args, kwargs, opcode, pos)

    def build(self, state: Any, pos: int) -> None:
        inst = self.top(pos)
        self.result.calls.append((f"BUILD on {describe(inst)}", "BUILD", self.base + pos))
        if isinstance(inst, Call) and isinstance(inst.func, Global):
            inst.state = state if inst.state is None else (inst.state, state)
            return
        self.finding(
            "unsafe",
            "build",
            f"BUILD sets state on {describe(inst)}; only objects built by allow-listed "
            "callables (tensors, parameters, OrderedDict) may receive state",
            pos,
        )

    def frame_check(self, op_pos: int) -> None:
        if self.frame_end >= 0 and op_pos < self.frame_end < self.pos:
            self.finding(
                "unsafe",
                "ambiguous-frame",
                "an opcode crosses the end of its FRAME: the C and Python unpicklers disagree",
                op_pos,
            )
            self.frame_end = -1

    def _scan_global(self, module: str, name: str, opcode: str, pos: int, note: str) -> None:
        # Only names Python can import: bytes that merely look like GLOBAL are not findings.
        if not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(name)):
            return
        if self.result.protocol < 3:
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
        if not is_allowed(module, name):
            dotted = f"{module}.{name}"
            self.finding(
                "unsafe",
                "global",
                f"{dotted} ({opcode}) is not in the allow-list: {explain(dotted)}{note}",
                pos,
            )

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> VMResult:
        # The run builds millions of small containers and no cycles that matter: the cyclic GC
        # would rescan them all again and again (quadratic time), so it waits until the end.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> VMResult:
        try:
            try:
                self._loop()
            finally:
                if self.budget is not None:
                    self.budget.charge(self.result.opcodes)
        except _Stop:
            last = self.result.findings[-1].code if self.result.findings else ""
            if self.resume_at >= 0 and last not in _EXACT_STOPS and self.scan_after_stop:
                self.scan_rest(self.resume_at)
        except RecursionError:
            self.finding("error", "limit", "the pickle nests too deeply", self.pos)
        except MemoryError:
            self.finding("error", "limit", "the pickle needs more memory than there is", self.pos)
        except Exception as exc:  # noqa: BLE001 - a VM bug must not lose the findings so far
            self.finding(
                "error", "vm-failure", f"the pickle VM failed ({type(exc).__name__})", self.pos
            )
        self.result.end = self.pos
        if not self.result.completed:
            self._downgrade_persistent_ids()
        try:
            self.buf.release()
        except BufferError:  # a slice is still referenced; it is freed with it
            pass
        return self.result

    def _downgrade_persistent_ids(self) -> None:
        """A non-storage persistent id runs nothing by itself: plain pickle.load has no
        persistent_load and stops there, torch's asserts a storage. It is ``unsafe`` as an
        ambiguity of a pickle that loads; in one that never reaches its STOP (text that happens
        to start with ``P``: a LICENSE file) it is only a warning."""
        from dataclasses import replace

        self.result.findings = [
            replace(f, severity="warning")
            if f.code == "persistent-id" and f.severity == "unsafe"
            else f
            for f in self.result.findings
        ]

    def _loop(self) -> None:
        limit = self.limits.max_opcodes
        shared = self.budget is not None and self.budget.left < limit
        if shared and self.budget is not None:
            limit = self.budget.left
        while True:
            op_pos = self.pos
            if op_pos >= self.n:
                raise self.fail("truncated", "the pickle ends before its STOP opcode", op_pos)
            self.result.opcodes += 1
            if self.result.opcodes > limit:
                self.resume_at, self.failed_op = op_pos, ""  # scan on from this opcode
                if shared:
                    raise self.fail("limit", self._spent(), op_pos)
                raise self.fail("limit", f"more than {limit} opcodes", op_pos)
            code = self.buf[op_pos]
            op = OPCODES.get(code)
            if op is None:
                raise self.fail("bad-opcode", f"unknown opcode 0x{code:02x}: not a pickle", op_pos)
            self.pos += 1
            arg = self.read_arg(op, op_pos)
            self.frame_check(op_pos)
            if op.name == "STOP":
                if self.frame_end > self.pos:
                    # CPython has read the whole frame: the next load (torch's legacy header
                    # pickles, a second pickle.load) starts at the frame's end, not here.
                    self.finding(
                        "unsafe",
                        "ambiguous-frame",
                        f"STOP {self.frame_end - self.pos} bytes before the end of its FRAME: "
                        "the unpickler has read the whole frame, so the next read starts at the "
                        "frame's end, not after STOP",
                        op_pos,
                    )
                self.result.root = self.pop(op_pos)
                self.result.completed = True
                return
            try:
                self.execute(op, arg, op_pos)
            except _Stop:
                self.resume_at, self.failed_op = self.pos, op.name
                raise

    def _spent(self) -> str:
        """The message of a run stopped by the file's opcode budget (and marks it so)."""
        assert self.budget is not None
        self.budget.spent = self.result.budget_spent = True
        return (
            f"the file's pickles run more than {self.budget.total:,} opcodes together "
            "(modelsafe's budget for one file): the rest is not run"
        )

    def scan_rest(self, pos: int) -> None:
        """After the run stopped (a limit, an argument CPython may accept), name the globals on.

        A walk over the remaining opcodes that executes nothing and builds nothing: it keeps a
        symbolic stack of strings (MARK, POP, POP_MARK, DUP, the memo, the VM's stack and memo as
        they were at the stop), so each GLOBAL / INST name, each STACK_GLOBAL on two strings and
        each EXT code outside the allow-list is an ``unsafe`` finding, and a STACK_GLOBAL on a
        call's result a ``dynamic-global`` one. It has its own budget (:data:`_SCAN_OPCODES`);
        past it (an ``error``: the rest is not read opcode by opcode), a byte search (C speed)
        names GLOBAL/INST lines and STACK_GLOBALs in the rest of the stream. A limit or a
        divergence never hides a payload silently; the verdict is at least ``error`` there.
        """
        budget = _SCAN_OPCODES
        shared = self.budget is not None and self.budget.left < budget
        if shared and self.budget is not None:
            budget = self.budget.left
        try:
            end = self._scan(pos, budget)
            if end >= 0:
                why = (
                    self._spent()
                    if shared
                    else f"more than {budget:,} opcodes after the pickle VM stopped"
                )
                self.finding(
                    "error",
                    "limit",
                    f"{why}: the {self.n - end:,} bytes left are only searched for names",
                    end,
                )
                self._byte_search(end)
        except Exception:  # noqa: BLE001,S110 - the scan only adds findings; a bad byte ends it
            pass

    def _scan_state(self) -> tuple[list[Any], list[list[Any]], dict[int, Any]]:
        def tag(value: Any) -> Any:
            return value if isinstance(value, str) else _CALL if isinstance(value, Call) else None

        stack = [tag(v) for v in self.stack]
        marks = [[tag(v) for v in segment] for segment in self.marks]
        memo = {k: tag(v) for k, v in self.memo.items() if isinstance(v, (str, Call))}
        failed = self.failed_op
        if failed == "MARK":
            marks.append(stack)
            stack = []
        elif failed in _SCAN_CALLS:
            stack.append(_CALL)  # the op's inputs are popped; its result was never pushed
        elif failed and failed not in _SCAN_NO_PUSH:
            stack.append(None)
        return stack, marks, memo

    def _scan(self, pos: int, allowed: int) -> int:
        """The symbolic walk of at most ``allowed`` opcodes (charged to the file's budget);
        returns where its budget ran out (-1: it reached an end)."""
        spent = [0]
        try:
            return self._scan_walk(pos, allowed, spent)
        finally:
            if self.budget is not None:
                self.budget.charge(spent[0])

    def _scan_walk(self, pos: int, budget: int, spent: list[int]) -> int:  # noqa: C901
        """:meth:`_scan`'s walk, one branch per opcode; ``spent[0]``: the opcodes it read."""
        raw, buf, n = self.raw, self.buf, self.n
        allowed = budget
        stack, marks, memo = self._scan_state()
        memo_len = len(self.memo)
        dropped = False  # whether a memo write found no room (past _SCAN_MEMO slots)
        frame_end = self.frame_end
        note = " (found by scanning on after the pickle VM stopped)"
        self.scan_memo = memo  # (kept: the byte search past the budget reads names from it)
        try:
            while pos < n:
                if budget <= 0:
                    self.scan_memo_len = memo_len  # (MEMOIZE past here writes slots from this on)
                    return pos
                budget -= 1
                op = OPCODES.get(buf[pos])
                if op is None:
                    return -1
                op_pos, pos = pos, pos + 1
                kind = op.arg
                arg: Any = None
                if kind in ("line", "line2"):
                    parts = []
                    for _ in range(1 if kind == "line" else 2):
                        end = raw.find(b"\n", pos)
                        if end < 0:
                            return -1
                        parts.append(bytes(buf[pos : min(end, pos + _SCAN_TEXT)]))
                        pos = end + 1
                    arg = parts
                elif kind in ("len1", "len4", "slen4", "len8"):
                    width = _WIDTHS[kind]
                    size = int.from_bytes(buf[pos : pos + width], "little", signed=kind == "slen4")
                    if size < 0:
                        return -1
                    arg = bytes(buf[pos + width : pos + width + min(size, _SCAN_TEXT)])
                    pos += width + size
                elif kind != "none":
                    size = _WIDTHS[kind]
                    arg = int.from_bytes(buf[pos : pos + size], "little")
                    pos += size
                if pos > n:
                    return -1
                name = op.name
                if name in _SCAN_PUSH_NONE:
                    stack.append(None)
                elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"):
                    stack.append(arg.decode("utf-8", "surrogatepass"))
                elif name in ("SHORT_BINSTRING", "BINSTRING"):
                    stack.append(_scan_py2(arg))
                elif name == "STRING":
                    stack.append(_scan_quoted(arg[0]))
                elif name == "UNICODE":
                    stack.append(_scan_unicode(arg[0]))
                elif name == "MARK":
                    marks.append(stack)
                    stack = []
                elif name == "POP":
                    if stack:
                        stack.pop()
                    elif marks:
                        stack = marks.pop()
                elif name == "POP_MARK":
                    stack = marks.pop() if marks else []
                elif name == "DUP":
                    stack.append(stack[-1] if stack else None)
                elif name in _SCAN_TO_MARK:  # pop to the MARK, push the result
                    stack = marks.pop() if marks else []
                    if name == "INST":
                        module, attr = (p.decode("utf-8", "replace") for p in arg)
                        self._scan_global(module, attr, name, op_pos, note)
                    stack.append(_CALL if name in ("INST", "OBJ") else None)
                elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                    stack = marks.pop() if marks else []
                elif name in _SCAN_POPS:
                    popped, result = _SCAN_POPS[name]
                    values = [stack.pop() if stack else None for _ in range(popped)]
                    if name == "STACK_GLOBAL":
                        self._scan_stack_global(values[1], values[0], op_pos, note)
                    if result != 0:
                        stack.append(result)
                elif name == "GLOBAL":
                    module, attr = (p.decode("utf-8", "replace") for p in arg)
                    self._scan_global(module, attr, name, op_pos, note)
                    stack.append(None)
                elif name in ("EXT1", "EXT2", "EXT4"):
                    self.finding(
                        "unsafe",
                        "extension",
                        f"{name} loads extension code {arg} from copyreg's registry{note}",
                        op_pos,
                    )
                    stack.append(None)
                elif name in ("BINGET", "LONG_BINGET", "GET"):
                    key = arg if name != "GET" else _int_or(arg[0], -1)
                    # (a slot the memo had no room for holds what modelsafe no longer knows)
                    stack.append(memo.get(key, _UNKNOWN if dropped else None))
                elif name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
                    key = memo_len if name == "MEMOIZE" else arg if name != "PUT" else -1
                    if name == "PUT":
                        key = _int_or(arg[0], -1)
                    if key not in memo and key not in self.memo:
                        memo_len += 1
                    if len(memo) < _SCAN_MEMO or key in memo:
                        memo[key] = stack[-1] if stack else None
                    else:
                        dropped = True
                elif name == "FRAME":
                    frame_end = pos + arg
                elif name == "STOP":
                    self._scan_stop(op_pos, pos, frame_end)
                    return -1
                # PROTO, READONLY_BUFFER: no stack effect
            return -1
        finally:
            spent[0] = allowed - budget

    def _scan_stack_global(self, module: Any, attr: Any, pos: int, note: str) -> None:
        """A STACK_GLOBAL the scan reached: named when both operands are strings, a
        ``dynamic-global`` when either is a call's result or a memo slot the scan did not keep
        (pickle.load imports whatever it holds); anything else is no string to CPython either,
        so the import fails there."""
        if isinstance(module, str) and isinstance(attr, str):
            self._scan_global(module, attr, "STACK_GLOBAL", pos, note)
        elif module is _CALL or attr is _CALL:
            self.finding(
                "unsafe",
                "dynamic-global",
                "STACK_GLOBAL takes its module/name from the result of calling a "
                f"function: the callable cannot be known{note}",
                pos,
            )
        elif module is _UNKNOWN or attr is _UNKNOWN:
            self.finding(
                "unsafe",
                "dynamic-global",
                f"STACK_GLOBAL takes its module/name from a memo slot modelsafe did not keep "
                f"(past {_SCAN_MEMO:,} slots): the callable cannot be known{note}",
                pos,
            )

    def _scan_stop(self, op_pos: int, pos: int, frame_end: int) -> None:
        """The scan reached this pickle's STOP: where the next pickle.load starts (the end of the
        frame, when STOP lies inside one), for readers of the pickles after it."""
        if frame_end > pos:
            self.finding(
                "unsafe",
                "ambiguous-frame",
                f"STOP {frame_end - pos} bytes before the end of its FRAME: the next read starts "
                "at the frame's end, not after STOP",
                op_pos,
            )
        self.result.resume = max(pos, frame_end)

    def _byte_search(self, pos: int) -> None:
        """Past the scan's budget: GLOBAL/INST lines, STACK_GLOBALs and pushed strings naming a
        dangerous module in the rest of the stream, found by regular expressions (C speed, no
        opcode walk)."""
        note = " (found by a byte search after the pickle VM stopped)"
        budget = [_SEARCH_FINDINGS]

        def counted(before: int) -> bool:
            budget[0] -= len(self.result.findings) - before
            return budget[0] <= 0

        for match in _GLOBAL_LINE.finditer(self.raw, pos):
            module, attr = (part.decode("ascii") for part in match.groups())
            before = len(self.result.findings)
            self._scan_global(module, attr, "GLOBAL", match.start(), note)
            if counted(before):
                return
        seen: set[int] = set()
        writes = _MemoWrites(self.raw, pos, self._memo_strings(), self.scan_memo_len)
        for match in _stack_global().finditer(self.raw, pos):
            at = match.start(3)
            if at in seen:
                continue
            before = len(self.result.findings)
            module, attr = match.group(1), match.group(2)
            self._searched_stack_global(module, attr, at, note, writes)
            if len(self.result.findings) > before:
                seen.add(at)
            if counted(before):
                return
        for match in _DANGEROUS_STRING.finditer(self.raw, pos):
            module = _pushed_name(self.raw, match)
            if module is None:
                continue
            self.finding(
                "unsafe",
                "global",
                f"a string naming module {module!r} ({explain(module)}) is pushed past where the "
                f"pickle VM stopped: likely the module of a STACK_GLOBAL{note}",
                match.start(),
            )
            if counted(len(self.result.findings) - 1):
                return

    def _searched_stack_global(
        self, module: bytes, attr: bytes, pos: int, note: str, writes: _MemoWrites
    ) -> None:
        """A STACK_GLOBAL the byte search found after two pushes (``module``, ``attr``: the bytes
        of each, a string or a memo read): a finding unless both are allow-listed names. A string
        is decoded as pickle decodes it (escapes included); a memo read takes the string the memo
        held where the VM (or the scan) last saw it, unless a write to that slot may lie between
        there and here. One it cannot tell (or a string it cannot decode) is a
        ``dynamic-global``: pickle.load imports whatever the stack holds by then."""
        values = [_search_operand(raw) for raw in (module, attr)]
        names = [self._memo_text(v, pos, writes) if isinstance(v, int) else v for v in values]
        slots = [str(v) for v in values if isinstance(v, int)]
        fed = f"{note[:-1]}; its names come from memo slot(s) {', '.join(slots)})"
        if isinstance(names[0], str) and isinstance(names[1], str):
            self._scan_global(names[0], names[1], "STACK_GLOBAL", pos, fed if slots else note)
            return
        source = f"memo slot(s) {', '.join(slots)}" if slots else "a string"
        self.finding(
            "unsafe",
            "dynamic-global",
            f"STACK_GLOBAL takes its module/name from {source}, whose content modelsafe cannot "
            f"follow past where the pickle VM stopped: the callable cannot be known{note}",
            pos,
        )

    def _memo_text(self, key: int, pos: int, writes: _MemoWrites) -> str | None:
        """The string in memo slot ``key`` as the scan (else the VM) last saw it, or None when
        a PUT/BINPUT/LONG_BINPUT/MEMOIZE past there may have rewritten it before ``pos``."""
        value = self.scan_memo[key] if key in self.scan_memo else self.memo.get(key)
        if not isinstance(value, str) or writes.first(key) < pos:
            return None
        return value

    def _memo_strings(self) -> set[int]:
        """The memo slots that hold a string where the byte search starts (the scan's memo,
        else the VM's): the only ones whose later writes :meth:`_memo_text` asks about."""
        keys = {k for k, v in self.scan_memo.items() if isinstance(v, str)}
        keys.update(
            k for k, v in self.memo.items() if isinstance(v, str) and k not in self.scan_memo
        )
        return keys

    def execute(self, op: Opcode, arg: Any, pos: int) -> None:  # noqa: C901 - one branch per op
        name = op.name
        push = self.push
        if name == "PROTO":
            if arg > HIGHEST_PROTOCOL:
                raise self.fail("protocol", f"unsupported pickle protocol {arg}", pos)
            self.result.protocol = arg  # (the last PROTO counts, as in CPython)
        elif name == "FRAME":
            if self.frame_end >= 0 and pos < self.frame_end:
                self.finding(
                    "unsafe",
                    "ambiguous-frame",
                    "a FRAME starts before the previous frame ends",
                    pos,
                )
            if self.pos + arg > self.n:
                # The C unpickler stops here; the pure-Python one (pickle._Unpickler, which
                # joblib.load uses) takes the short read as the frame and runs its opcodes: read
                # on, as that one does (a cut download stops at its real end anyway).
                self.finding(
                    "error",
                    "truncated",
                    f"a FRAME is {self.pos + arg - self.n:,} bytes longer than the data left: "
                    "the C unpickler (pickle.load, torch.load) stops here, the pure-Python one "
                    "(joblib.load) reads the rest as the frame and runs it",
                    pos,
                )
                arg = self.n - self.pos
            self.frame_end = self.pos + arg
        elif name == "MARK":
            if len(self.marks) >= self.limits.max_marks:
                raise self.fail("limit", "too many nested MARKs", pos)
            self.charge(64, pos)
            self.marks.append(self.stack)
            self.saved += len(self.stack)
            self.stack = []
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark(pos)
        elif name == "POP_MARK":
            self.pop_mark(pos)
        elif name == "DUP":
            push(self.top(pos), pos, fresh=False)
        elif name in ("NONE",):
            push(None, pos)
        elif name == "NEWTRUE":
            push(True, pos)
        elif name == "NEWFALSE":
            push(False, pos)
        elif name in ("BININT", "BININT1", "BININT2"):
            push(arg, pos)
        elif name in ("INT", "LONG", "FLOAT") and isinstance(arg, LargeBytes):
            # CPython parses any length (spaces, underscores); never copy it: a placeholder.
            push(Unparsed(arg.offset, arg.length), pos)
        elif name == "INT":
            push(self._text_int(arg, pos), pos)
        elif name == "LONG":
            push(self._text_int(arg, pos, "LONG"), pos)
        elif name in ("LONG1", "LONG4"):
            push(self._long(arg, pos), pos)
        elif name == "FLOAT":
            # C: PyOS_string_to_double, ending at the newline or a NUL; no spaces, no underscores
            text = bytes(arg).split(b"\0", 1)[0]
            try:
                if not text or any(c in b" \t\r\v\f_" for c in text):
                    raise ValueError
                push(float(text), pos)
            except ValueError:
                raise self.fail("bad-argument", "FLOAT argument is not a number", pos) from None
        elif name == "BINFLOAT":
            push(arg, pos)
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
            push(self.sized(arg, pos, text=True), pos)
        elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
            push(self.sized(arg, pos, text=False), pos)
        elif name in ("BINSTRING", "SHORT_BINSTRING"):
            value = self.sized(arg, pos, text=False)
            push(self._py2_str(value), pos)
        elif name in ("STRING", "UNICODE") and isinstance(arg, LargeBytes):
            push(arg, pos)
        elif name == "STRING":
            push(self._quoted(arg, pos), pos)
        elif name == "UNICODE":
            try:
                push(arg.decode("raw-unicode-escape"), pos)
            except UnicodeDecodeError:
                raise self.fail("bad-argument", "UNICODE argument cannot be decoded", pos) from None
        elif name == "EMPTY_TUPLE":
            push((), pos)
        elif name == "TUPLE":
            push(tuple(self.pop_mark(pos)), pos)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(self.stack) < count:
                raise self.fail("stack-underflow", f"{name} needs {count} values", pos)
            popped = tuple(self.stack[-count:])
            del self.stack[-count:]
            push(popped, pos)
        elif name == "EMPTY_LIST":
            push([], pos)
        elif name == "LIST":
            push(list(self.pop_mark(pos)), pos)
        elif name == "EMPTY_DICT":
            push(SymDict(), pos)
        elif name == "DICT":
            items = self.pop_mark(pos)
            push(SymDict(self._pairs(items, pos)), pos)
        elif name == "EMPTY_SET":
            push(SymSet(), pos)
        elif name == "FROZENSET":
            push(SymSet(self.pop_mark(pos), frozen=True), pos)
        elif name == "ADDITEMS":
            items = self.pop_mark(pos)
            target = self.top(pos)
            if not items:  # the C unpickler returns before it looks at the target
                return
            self.charge(8 * len(items), pos)
            if isinstance(target, SymSet):
                target.items.extend(items)
            elif isinstance(target, Call):  # CPython calls target.add(item): a set() result
                target.listitems.extend(items)
            else:
                raise self.fail("bad-target", f"ADDITEMS on {describe(target)}", pos)
        elif name == "APPEND":
            item = self.pop(pos)
            self._append(self.top(pos), [item], pos)
        elif name == "APPENDS":
            items = self.pop_mark(pos)
            target = self.top(pos)
            if items:  # empty: a no-op in the C unpickler, whatever the target
                self._append(target, items, pos)
        elif name == "SETITEM":
            value = self.pop(pos)
            key = self.pop(pos)
            self._setitems(self.top(pos), [(key, value)], pos)
        elif name == "SETITEMS":
            items = self.pop_mark(pos)
            target = self.top(pos)
            if items:  # empty: a no-op in the C unpickler, whatever the target
                self._setitems(target, self._pairs(items, pos), pos)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            key = self._text_int(arg, pos, "MEMO") if name == "GET" else arg
            if key not in self.memo:
                raise self.fail("memo-missing", f"{name} reads memo slot {key}, never written", pos)
            push(self.memo[key], pos, fresh=False)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            key = len(self.memo) if name == "MEMOIZE" else arg
            if name == "PUT":
                key = self._text_int(arg, pos, "MEMO")
            if key in self.memo:
                self.finding(
                    "unsafe",
                    "memo-overwrite",
                    f"{name} overwrites memo slot {key}: readers that track the memo differently "
                    "see different objects",
                    pos,
                )
            elif len(self.memo) >= self.limits.max_memo:
                raise self.fail("limit", "the memo grows past the limit", pos)
            else:
                self.charge(80, pos)
            self.memo[key] = self.top(pos)
        elif name == "GLOBAL":
            module, attr = (self._utf8(part, pos) for part in arg)
            push(self.make_global(module, attr, name, pos), pos)
        elif name == "STACK_GLOBAL":
            attr_value = self.pop(pos)
            module_value = self.pop(pos)
            push(self.make_global(module_value, attr_value, name, pos), pos)
        elif name == "INST":
            module, attr = (self._utf8(part, pos) for part in arg)
            cls = self.make_global(module, attr, name, pos)
            push(self.call(cls, tuple(self.pop_mark(pos)), None, name, pos), pos)
        elif name == "OBJ":
            items = self.pop_mark(pos)
            if not items:
                raise self.fail("stack-underflow", "OBJ without a class", pos)
            push(self.call(items[0], tuple(items[1:]), None, name, pos), pos)
        elif name == "REDUCE":
            args = self.pop(pos)
            func = self.pop(pos)
            push(self.call(func, args, None, name, pos), pos)
        elif name == "NEWOBJ":
            args = self.pop(pos)
            cls = self.pop(pos)
            push(self.call(cls, args, None, name, pos), pos)
        elif name == "NEWOBJ_EX":
            kwargs = self.pop(pos)
            args = self.pop(pos)
            cls = self.pop(pos)
            push(self.call(cls, args, kwargs, name, pos), pos)
        elif name == "BUILD":
            self.build(self.pop(pos), pos)
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.finding(
                "unsafe",
                "extension",
                f"{name} loads extension code {arg} from copyreg's registry: "
                "an unnamed callable chosen at load time",
                pos,
            )
            push(Global("<copyreg extension>", str(arg), pos), pos)
        elif name in ("PERSID", "BINPERSID"):
            pid = self._utf8(arg, pos) if name == "PERSID" else self.pop(pos)
            ref = PersistentRef(pid, self.base + pos)
            if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
                self.finding(
                    "unsafe",
                    "persistent-id",
                    f"{name} gives a persistent id that is not a torch storage ({describe(pid)}): "
                    "only a custom persistent_load can resolve it, and "
                    "torch.load(weights_only=True) refuses it",
                    pos,
                )
            self.result.persistent_ids.append(ref)
            push(ref, pos)
        elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            if name == "NEXT_BUFFER":
                push(Buffer(), pos)
            else:
                self.top(pos)
            self.finding(
                "error",
                "out-of-band",
                "the pickle needs out-of-band buffers that are not in the file",
                pos,
            )
        else:  # pragma: no cover - the table and this dispatch list the same names
            raise self.fail("bad-opcode", f"opcode {name} is not handled", pos)

    # -- value helpers --------------------------------------------------------------------------

    def _append(self, target: Any, items: list[Any], pos: int) -> None:
        self.charge(8 * len(items), pos)
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Call):
            target.listitems.extend(items)
        else:
            raise self.fail("bad-target", f"APPEND(S) on {describe(target)}", pos)

    def _setitems(self, target: Any, pairs: list[tuple[Any, Any]], pos: int) -> None:
        self.charge(64 * len(pairs), pos)
        if isinstance(target, SymDict):
            target.items.extend(pairs)
        elif isinstance(target, Call):
            target.dictitems.extend(pairs)
        elif isinstance(target, list):  # CPython: target[key] = value
            for key, value in pairs:
                if not isinstance(key, int) or not -len(target) <= key < len(target):
                    raise self.fail(
                        "bad-target", f"SETITEM on a list with key {describe(key)}", pos
                    )
                target[key] = value
        else:
            raise self.fail("bad-target", f"SETITEM(S) on {describe(target)}", pos)

    def _pairs(self, items: list[Any], pos: int) -> list[tuple[Any, Any]]:
        if len(items) % 2:
            raise self.fail("bad-argument", "an odd number of items for a dict", pos)
        return list(zip(items[::2], items[1::2], strict=True))

    def _text_int(self, raw: Any, pos: int, kind: str = "INT") -> int | bool:
        """A text integer parsed as the C unpickler parses it (``_pickle.c``).

        INT: ``strtol(line, &end, 0)`` (C literals: ``01751`` is octal, ``0x`` hex, leading
        whitespace, a sign, the line may end at a NUL), ``"00"``/``"01"`` and other 2-character
        lines of value 0/1 are booleans; when strtol overflows or stops early, Python's
        ``int(text, 0)``. LONG: ``int(text, 0)`` with one trailing ``L`` dropped. GET/PUT: base 10.
        Whitespace around the number is taken as ``int()`` and ``strtol`` take it, however much
        (a text argument over ``max_line`` included); the number itself may have CPython's 4,300
        digits (and a sign, underscores, a base prefix).
        """
        # (the common case inline: a short argument, whitespace and all)
        short = not isinstance(raw, LargeBytes) and len(raw) <= _MAX_TEXT_INT
        raw = bytes(raw) if short else self._number_text(raw)
        if raw is None:
            raise self.fail(
                "bad-argument", "a text integer is too long (or holds spaces inside it)", pos
            )
        if kind == "INT":
            value = _strtol(raw)
            if value is not None:
                return bool(value) if len(raw) == 2 and value in (0, 1) else value
        cut = raw.split(b"\0", 1)[0]  # C strings end at a NUL
        if kind == "LONG" and raw.endswith(b"L"):
            cut = raw[:-1].split(b"\0", 1)[0]
        try:
            return int(cut, 10 if kind == "MEMO" else 0)
        except ValueError:
            raise self.fail("bad-argument", "a text integer is not a number", pos) from None

    def _number_text(self, raw: Any) -> bytes | None:
        """A text number's argument as bytes; a long one (over :data:`_MAX_TEXT_INT` bytes, or
        over ``max_line``: a :class:`LargeBytes`) with the whitespace around the number cut
        short, which parses the same (``strtol`` skips leading whitespace and stops at trailing
        whitespace, where ``int()`` takes over, which strips both; a NUL ends the C string).
        None when more than a number is left."""
        if isinstance(raw, LargeBytes):
            text, start = self.raw, raw.offset - self.base
            end = start + raw.length
        else:  # (a short one never comes here: :meth:`_text_int` reads it inline)
            text, start, end = raw, 0, len(raw)
        nul = text.find(b"\0", start, end)
        stop = end if nul < 0 else nul
        match = _PADDED_NUMBER.match(text, start, stop)
        if match is None:
            return None
        # (two spaces: a cut text is never 2 bytes long, which INT reads as a boolean)
        lead = b"  " if match.start(1) > start else b""
        trail = b" " if match.end(1) < stop else b""
        return lead + bytes(match.group(1)) + trail + (b"\0" if nul >= 0 else b"")

    def _long(self, size: int, pos: int) -> Any:
        if size < 0:
            raise self.fail("bad-argument", "LONG4 with a negative length", pos)
        raw = self.take(size, pos)
        if size > 64 and not _sign_extended(raw):
            return LargeBytes(self.base + self.pos - size, size, False)
        return int.from_bytes(raw[:64], "little", signed=True)

    def _utf8(self, raw: Any, pos: int) -> str:
        if isinstance(raw, LargeBytes):
            return f"<a {raw.length}-byte name>"
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("bad-argument", "a name is not valid UTF-8", pos) from None

    def _quoted(self, raw: bytes, pos: int) -> Any:
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b"'", b'"'):
            try:
                return self._py2_str(codecs.escape_decode(raw[1:-1])[0])
            except ValueError:
                pass
        raise self.fail("bad-argument", "STRING argument is not a quoted string", pos)

    @staticmethod
    def _py2_str(value: Any) -> Any:
        if isinstance(value, bytes):
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                return value
        return value


# Stops where CPython stops too (the stack and memo are mirrored exactly): no scan after them.
_EXACT_STOPS = frozenset(
    {"stack-underflow", "no-mark", "memo-missing", "truncated", "bad-opcode", "unimportable"}
)
EXACT_STOPS = _EXACT_STOPS
_CALL = object()  # the scan's stand-in for a call's result (a computed, unknown value)
_UNKNOWN = object()  # the scan's stand-in for a memo slot it had no room to keep
_SCAN_OPCODES = 2_000_000  # the scan's own opcode budget after a stop
_SEARCH_FINDINGS = 64  # findings the byte search past the scan's budget reports at most
_WIDTHS = {"len1": 1, "len4": 4, "slen4": 4, "len8": 8, "u1": 1, "u2": 2, "u4": 4, "i4": 4}
_WIDTHS.update({"u8": 8, "f8": 8})
_SCAN_PUSH_NONE = frozenset(
    "NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT "
    "SHORT_BINBYTES BINBYTES BINBYTES8 BYTEARRAY8 EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET "
    "PERSID NEXT_BUFFER".split()
)
_SCAN_TO_MARK = frozenset({"TUPLE", "LIST", "DICT", "FROZENSET", "INST", "OBJ"})
# name -> (values popped, what is pushed: None, _CALL, or 0 for nothing)
_SCAN_POPS: dict[str, tuple[int, Any]] = {
    "TUPLE1": (1, None),
    "TUPLE2": (2, None),
    "TUPLE3": (3, None),
    "APPEND": (1, 0),
    "SETITEM": (2, 0),
    "BUILD": (1, 0),
    "REDUCE": (2, _CALL),
    "NEWOBJ": (2, _CALL),
    "NEWOBJ_EX": (3, _CALL),
    "STACK_GLOBAL": (2, None),
    "BINPERSID": (1, None),
}
_SCAN_CALLS = frozenset({"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"})
_SCAN_NO_PUSH = frozenset(
    "POP POP_MARK APPEND APPENDS SETITEM SETITEMS ADDITEMS BUILD PUT BINPUT LONG_BINPUT "
    "MEMOIZE PROTO FRAME READONLY_BUFFER STOP".split()
)
_NAME = rb"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,16}"
_GLOBAL_LINE = re.compile(rb"[ci](" + _NAME + rb")\n(" + _NAME + rb")\n")


def _dangerous_strings() -> re.Pattern[bytes]:
    """A push of a string that may name a dangerous module: the opcode (and length prefix), then
    the name (group 1); :func:`_pushed_name` checks the prefix and the end. One alternation of
    names after a prefix class, so that most bytes are rejected by their first byte."""
    from modelsafe.registry.pickle_vm.known_globals import DANGEROUS

    modules = sorted(
        {key.split(".")[0] for key in DANGEROUS} - {"torch", "numpy"} | {"__builtin__"},
        key=len,
        reverse=True,  # (longest first: "posixpath" before "posix")
    )
    names = b"|".join(re.escape(module.encode()) for module in modules)
    prefix = rb"(?:[\x8cU][\x01-\xff]|[XT][\x01-\xff]\x00\x00\x00|\x8d[\x01-\xff]\x00{7}|V|S['\"])"
    return re.compile(prefix + b"(" + names + b")")


def _pushed_name(raw: Any, match: re.Match[bytes]) -> str | None:
    """The module a :data:`_DANGEROUS_STRING` match pushes, or None when its length prefix or
    its end (a newline, a closing quote) does not fit the name: no push of that string."""
    name = match.group(1)
    start, end = match.start(), match.end(1)
    op = raw[start : start + 1]
    if op in (b"V", b"S"):
        closing = b"\n" if op == b"V" else raw[start + 1 : start + 2] + b"\n"
        fits = raw[end : end + len(closing)] == closing
    else:
        fits = int.from_bytes(raw[start + 1 : match.start(1)], "little") == len(name)
    return name.decode("ascii") if fits else None


_DANGEROUS_STRING = _dangerous_strings()


# A STACK_GLOBAL after two pushes, for the byte search: each push a string (any string opcode:
# SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, UNICODE, STRING, BINSTRING, SHORT_BINSTRING; a name
# of up to 255 bytes) or a memo read (GET, BINGET, LONG_BINGET), each maybe memoized, with
# value-and-POP / MARK-POP_MARK pairs between. A length prefix fixes its name's length (one
# alternative per length, grouped by opcode so most bytes fail on the first). Searched at every
# offset (a lookahead), since pushes may overlap false starts.
def _search_push() -> bytes:
    chars = rb"[A-Za-z0-9_.]"
    sized = []
    for op, width in ((rb"[\x8cU]", 1), (rb"[XT]", 4), (rb"\x8d", 8)):
        lengths = b"|".join(
            re.escape(size.to_bytes(width, "little")) + chars + b"{%d}" % size
            for size in range(1, 256)
        )
        sized.append(op + b"(?:" + lengths + b")")
    escaped = rb"(?:" + chars + rb"|\\[^\n]){1,255}"  # (decoded as pickle does, then judged)
    text = rb"V" + escaped + rb"\n|S'" + escaped + rb"'\n|S\"" + escaped + rb"\"\n"
    memo = rb"g[0-9]{1,10}\n|h[\s\S]|j[\s\S]{4}"
    return b"(?:" + b"|".join([*sized, text, memo]) + b")"


# What may sit after a push (before the next push or the STACK_GLOBAL) without changing the
# two strings on top: memo writes, FRAME, PROTO, a value (DUP included) and its POP, MARK and its
# POP / POP_MARK.
_SEARCH_PUT = rb"q[\s\S]|r[\s\S]{4}|\x94|p[^\n]{1,24}\n"
_SEARCH_VALUE = rb"[N\x88\x892)\]}\x8f]|K[\s\S]|M[\s\S]{2}|J[\s\S]{4}|G[\s\S]{8}|h[\s\S]|j[\s\S]{4}"
_SEARCH_AFTER = (
    rb"(?:"
    + _SEARCH_PUT
    + rb"|\x95[\s\S]{8}|\x80[\s\S]|(?:"
    + _SEARCH_VALUE
    + rb")(?:"
    + _SEARCH_PUT
    + rb")*0|\([01])*"
)


class _MemoWrites:
    """Where the byte search's stream (from ``start`` on) first may write each memo slot that
    holds a string (``keys``): PUT, BINPUT and LONG_BINPUT name theirs; MEMOIZE writes slot
    ``len(memo)``, at least ``memo_len`` (the memo's length where the scan stopped), so any
    ``0x94`` may write any slot from there on.

    The index is built once, on the first question, in one pass over the stream (numpy, in
    pieces: C speed, memory bounded by a piece): one search per slot asked about was quadratic
    (80,000 slots over 3 MiB: 87 s). PUT lines are text, read by a regular expression up to
    :data:`_PUT_LINES` of them; past that, every slot may be written from there on."""

    def __init__(self, raw: Any, start: int, keys: set[int], memo_len: int) -> None:
        self.raw, self.start, self.memo_len = raw, start, memo_len
        self.keys = keys
        self.memoize = _found(raw.find(b"\x94", start))
        self.index: dict[int, int] | None = None
        self.unread = _NOWHERE  # where PUT lines stop being read (:data:`_PUT_LINES`)

    def first(self, key: int) -> int:
        """The first byte past ``start`` that may write slot ``key`` (a large number: none)."""
        if self.index is None:
            self.index = self._build()
        at = min(self.index.get(key, _NOWHERE), self.unread)
        return min(at, self.memoize) if key >= self.memo_len else at

    def _build(self) -> dict[int, int]:
        """slot -> first write of it past ``start``."""
        index: dict[int, int] = {}
        if not self.keys:
            return index
        small = sorted(k for k in self.keys if 0 <= k < 256)
        large = sorted(k for k in self.keys if 0 <= k < 1 << 32)
        for opcode, width, wanted in ((0x71, 1, small), (0x72, 4, large)):  # BINPUT, LONG_BINPUT
            if wanted:
                for key, at in _first_writes(self.raw, self.start, opcode, width, wanted).items():
                    index[key] = min(at, index.get(key, _NOWHERE))
        for count, match in enumerate(_PUT_LINE.finditer(self.raw, self.start)):
            if count >= _PUT_LINES:
                self.unread = match.start()  # (not read on: any slot may be written here)
                break
            key = _int_or(match.group(1), -1)
            if key in self.keys and match.start() < index.get(key, _NOWHERE):
                index[key] = match.start()
        return index


_PUT_LINES = 1_000_000  # PUT lines the memo-write index reads (a regex match each)
_INDEX_PIECE = 4 << 20  # bytes of the stream :func:`_first_writes` looks at in one step


def _first_writes(
    raw: Any, start: int, opcode: int, width: int, wanted: list[int]
) -> dict[int, int]:
    """For each slot in ``wanted`` (sorted), the first position from ``start`` on of ``opcode``
    followed by the slot as a ``width``-byte little-endian number (a BINPUT / LONG_BINPUT that
    writes it), where there is one."""
    import numpy as np

    found: dict[int, int] = {}
    left = np.asarray(wanted, dtype=np.uint64)
    size = len(raw)
    piece = start
    while piece < size and left.size:
        stop = min(size, piece + _INDEX_PIECE)
        view = np.frombuffer(
            raw, dtype=np.uint8, count=min(size, stop + width) - piece, offset=piece
        )
        at = np.flatnonzero(view[: stop - piece] == opcode)
        at = at[at + width < len(view)]  # (a write whose slot runs past the end is none)
        keys = np.zeros(len(at), dtype=np.uint64)
        for byte in range(width):
            keys |= view[at + 1 + byte].astype(np.uint64) << np.uint64(8 * byte)
        hit = np.isin(keys, left)
        if hit.any():
            slots, first = np.unique(keys[hit], return_index=True)
            for slot, where in zip(slots.tolist(), (at[hit][first] + piece).tolist(), strict=True):
                found[int(slot)] = int(where)
            left = np.setdiff1d(left, slots, assume_unique=True)
        del view, at, keys, hit  # (no view of a mapped file may outlive the search)
        piece = stop
    return found


_PUT_LINE = re.compile(rb"p([^\n]{1,24})\n")
_NOWHERE = 1 << 62


def _found(at: int) -> int:
    return _NOWHERE if at < 0 else at


@functools.cache
def _stack_global() -> re.Pattern[bytes]:
    """The STACK_GLOBAL search, compiled on first use (tens of ms: not at every import)."""
    push = _search_push()
    return re.compile(
        rb"(?=(" + push + rb")" + _SEARCH_AFTER + rb"(" + push + rb")" + _SEARCH_AFTER + rb"(\x93))"
    )


def _search_operand(raw: bytes) -> str | int | None:
    """What a push the byte search matched gives: its string, or the memo slot it reads."""
    op = raw[:1]
    if op in (b"g", b"h", b"j"):
        return int(raw[1:-1]) if op == b"g" else int.from_bytes(raw[1:], "little")
    if op == b"V":
        return _scan_unicode(raw[1:-1])
    if op == b"S":
        return _scan_quoted(raw[1:-1])
    width = {b"\x8c": 1, b"U": 1, b"X": 4, b"T": 4, b"\x8d": 8}[op]
    return raw[1 + width :].decode("ascii")


def _scan_py2(raw: bytes) -> Any:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


def _scan_quoted(raw: bytes) -> Any:
    """A STRING argument decoded as pickle decodes it (quotes, backslash escapes), or None."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b"'", b'"'):
        try:
            return _scan_py2(codecs.escape_decode(raw[1:-1])[0])
        except ValueError:
            return None
    return None


def _scan_unicode(raw: bytes) -> Any:
    try:
        return raw.decode("raw-unicode-escape")
    except UnicodeDecodeError:
        return None


# Characters no module file of any Python installation has in its name (text that reads as a
# GLOBAL/INST: prose in a licence file). A name without them may be importable even when it is no
# identifier: ``_sysconfigdata__linux_x86_64-linux-gnu`` is a stdlib module; it stays a global.
_NO_MODULE = re.compile(r"[\s\x00-\x1f,;:'\"()\[\]{}<>/\\|*?]|^\.|\.$|\.\.|^$")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SCAN_MEMO = 65_536  # strings the scan remembers for STACK_GLOBAL via the memo
_SCAN_TEXT = 512  # bytes of a string argument the scan looks at
_MAX_TEXT_INT = 4400  # 4300 digits, a sign, an "L", a few spaces
# A text number's argument: whitespace, at most _MAX_TEXT_INT bytes of anything else, whitespace
# (C's isspace: strtol skips it before the number; int() strips it both sides).
_PADDED_NUMBER = re.compile(
    rb"[ \t\v\f\r]*+([^ \t\v\f\r]{0,%d})[ \t\v\f\r]*+\Z" % _MAX_TEXT_INT  # (no backtracking)
)


_C_SPACE = b" \t\n\v\f\r"
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _strtol(raw: bytes) -> int | None:
    """C's ``strtol(s, &end, 0)`` on ``raw + b"\\n"``, or None where ``_pickle.c`` falls back to
    ``int(s, 0)`` (overflow, or ``end`` not at the newline or a NUL)."""
    s = raw + b"\n"
    i = 0
    while s[i] in _C_SPACE and i < len(raw):
        i += 1
    neg = False
    if s[i : i + 1] in (b"+", b"-"):
        neg = s[i] == 0x2D
        i += 1
    base, digits = 10, b"0123456789"
    if s[i : i + 2] in (b"0x", b"0X") and s[i + 2 : i + 3].lower() in tuple(
        bytes([c]) for c in b"0123456789abcdef"
    ):
        base, digits, i = 16, b"0123456789abcdefABCDEF", i + 2
    elif s[i : i + 1] == b"0":
        base, digits = 8, b"01234567"
    start = i
    while i < len(s) and s[i] in digits:
        i += 1
    if i == start:  # no digits: strtol returns 0 with end at the start of the line
        return 0 if raw[:1] in (b"\0", b"") else None
    if s[i] not in (0x0A, 0x00) or (base == 10 and i - start > 19):
        return None  # (past 19 decimal digits: an overflow, and past int()'s digit limit too)
    value = int(s[start:i], base)
    value = -value if neg else value
    if not _LONG_MIN <= value <= _LONG_MAX:
        return None
    return value


_CHUNK = 1 << 20


def _sign_extended(raw: memoryview) -> bool:
    """Whether a LONG1/LONG4 argument longer than 64 bytes is a number of at most 64 bytes padded
    with sign bytes (CPython reads ``1001`` followed by zero bytes as 1001, whatever the length):
    then the VM keeps the number itself, not a placeholder."""
    pad = 0xFF if raw[-1] & 0x80 else 0
    if raw[63] & 0x80 != pad & 0x80:
        return False
    for start in range(64, len(raw), _CHUNK):
        chunk = bytes(raw[start : start + _CHUNK])
        if chunk.count(pad) != len(chunk):
            return False
    return True


def _int_or(raw: bytes, default: int) -> int:
    try:
        return int(raw)
    except ValueError:
        return default


def _cost(value: Any) -> int:
    """About how many bytes ``value`` (a new object on the stack) holds, strings not counted."""
    if isinstance(value, (int, float)):
        return 32
    if isinstance(value, (str, bytes)):
        return 48
    if isinstance(value, (tuple, list)):
        return 56 + 8 * len(value)
    if isinstance(value, SymDict):
        return 120 + 64 * len(value.items)
    if isinstance(value, SymSet):
        return 120 + 8 * len(value.items)
    return 120


def run_pickle(
    data: Any,
    start: int = 0,
    *,
    limits: Limits = DEFAULT_LIMITS,
    label: str = "pickle",
    base: int = 0,
    scan: bool = True,
) -> VMResult:
    """Run the pickle that begins at ``data[start]`` symbolically; never raises on bad input.

    ``label`` names the stream in finding locations and ``base`` is added to byte positions
    (so a pickle inside a larger file reports file offsets). ``scan``: after a stop CPython may
    not share (a limit), scan the rest of the stream for names (False for a probe that only
    asks what a short pickle holds).
    """
    return _Machine(data, start, limits, label, base, scan).run()


def search_names(
    data: Any, start: int = 0, *, label: str = "pickle", base: int = 0
) -> list[Finding]:
    """``unsafe`` findings for the GLOBAL/INST lines and dangerous module names in ``data`` from
    ``start`` on, found by a byte search (no opcode is run): for bytes past what is run as
    pickles one by one (the pickle after thousands of empty ones)."""
    machine = _Machine(data, start, DEFAULT_LIMITS, label, base)
    machine._byte_search(start)
    return machine.result.findings
