"""What a global outside the allow-list is known to do, so a finding can say it in words.

This table never decides a verdict (every global outside the allow-list is a finding and makes the
file unsafe, as torch.load(weights_only=True) would refuse it); it only tells a user whether the
name is a classic attack primitive or a harmless-looking training record that still needs a full,
code-running load.
"""

from __future__ import annotations

# Module (or module.name) -> what reaching it lets a pickle do. Longest match wins.
DANGEROUS: dict[str, str] = {
    "os": "runs shell commands and reads, writes or deletes files",
    "posix": "runs shell commands and reads, writes or deletes files",
    "nt": "runs shell commands and reads, writes or deletes files",
    "subprocess": "runs programs",
    "pty": "runs programs in a terminal",
    "runpy": "runs Python modules and files",
    "code": "runs Python code",
    "builtins.eval": "runs Python code",
    "builtins.exec": "runs Python code",
    "builtins.compile": "compiles Python code to run it",
    "builtins.open": "opens files for reading or writing",
    "io": "opens files for reading or writing",
    "builtins.__import__": "imports any module",
    "builtins.getattr": "reaches any attribute of any object (a way to hide the real call)",
    "builtins.setattr": "changes any attribute of any object",
    "builtins.globals": "reaches the interpreter's globals",
    "builtins.breakpoint": "starts a debugger",
    "importlib": "imports any module",
    "pickle": "loads a second, hidden pickle",
    "_pickle": "loads a second, hidden pickle",
    "marshal": "loads compiled Python code",
    "types.FunctionType": "builds a Python function from code",
    "types.CodeType": "builds Python code",
    "ctypes": "calls native code",
    "socket": "opens network connections",
    "http": "makes network requests",
    "urllib": "makes network requests",
    "requests": "makes network requests",
    "webbrowser": "opens web pages",
    "shutil": "copies, moves or deletes files",
    "tempfile": "creates files",
    "sys": "changes the interpreter (modules, paths, exit)",
    "asyncio": "runs subprocesses and network code",
    "multiprocessing": "starts processes",
    "torch.load": "loads another file without the weights-only checks",
    "torch.hub": "downloads and runs code",
    "numpy.load": "loads another file that may hold a pickle",
    "operator.attrgetter": "reaches any attribute (a way to hide the real call)",
    "operator.methodcaller": "calls any method",
    "functools.partial": "prepares any call (a way to hide the real call)",
}

# Names found in real, benign checkpoints that torch's weights-only loader still refuses.
RECORDS: dict[str, str] = {
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": (
        "a PyTorch Lightning training-callback record (original SD 1.x releases carry one); "
        "it holds no weights"
    ),
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint": (
        "a Lightning training-callback record; it holds no weights"
    ),
    "argparse.Namespace": "a trainer's saved command-line arguments; it holds no weights",
    "omegaconf.dictconfig.DictConfig": "a saved training config; it holds no weights",
    "omegaconf.listconfig.ListConfig": "a saved training config; it holds no weights",
}


def explain(dotted: str) -> str:
    """The words after "is not in the allow-list: " for the global ``dotted``."""
    if dotted in RECORDS:
        module = dotted.split(".", 1)[0]
        return (
            f"{RECORDS[dotted]}, but torch.load(weights_only=True) refuses it and a full load "
            f"imports {module} and builds the object"
        )
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        what = DANGEROUS.get(".".join(parts[:cut]))
        if what is not None:
            return f"it {what}; loading the file would import it and may call it"
    return "loading the file would import it and may call it"
