"""The ``modelsafe`` command line. Errors are mapped to messages and exit codes here, once.

Exit codes: 0 success (or safe / compatible), 1 a negative answer (unsafe file, rejected
component), 2 an error (unreadable input, bad usage, catalog trouble), 3 an unexpected internal
error, 130 interrupted. A reader that closes stdout early (``modelsafe ls | head -1``) ends the
command quietly, with 0 (never click's 1, which here means "unsafe").
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from typing import Any, NoReturn

import click

from modelsafe.errors import ModelsafeError

# command name -> "module:attribute"; modules import only what they need when they run.
COMMANDS: dict[str, str] = {
    "audit": "modelsafe.commands.audit_cmd:audit",
    "config": "modelsafe.commands.config_cmd:config",
    "convert": "modelsafe.commands.convert_cmd:convert",
    "demo": "modelsafe.commands.demo_cmd:demo",
    "export": "modelsafe.commands.export_cmd:export",
    "generate": "modelsafe.commands.generate_cmd:generate",
    "inspect": "modelsafe.commands.inspect_cmd:inspect_command",
    "ls": "modelsafe.commands.ls_cmd:ls",
    "plugins": "modelsafe.commands.plugins_cmd:plugins",
    "plan": "modelsafe.commands.plan_cmd:plan_command",
    "resolve": "modelsafe.commands.resolve_cmd:resolve_command",
    "scan": "modelsafe.commands.scan_cmd:scan",
    "serve": "modelsafe.commands.serve_cmd:serve",
    "set": "modelsafe.commands.set_cmd:set_command",
    "show": "modelsafe.commands.show_cmd:show",
    "worker": "modelsafe.commands.worker_cmd:worker",
}

EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class InternalError(ModelsafeError):
    """An exception modelsafe did not expect (a bug here or in a plugin), as the CLI reports it."""

    exit_code = EXIT_INTERNAL


class Interrupted(ModelsafeError):
    """Ctrl-C or a termination signal ended the command."""

    exit_code = EXIT_INTERRUPTED


class PipeClosed(Exception):
    """The reader of stdout went away (``modelsafe ls | head -1``): raised in place of the
    BrokenPipeError, which click would turn into exit code 1 (modelsafe's "unsafe")."""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when used (keeps start-up fast)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:  # (--help and --version write while the line is parsed)
            return super().make_context(info_name, args, parent=parent, **extra)
        except BrokenPipeError as exc:
            raise PipeClosed() from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise PipeClosed() from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._available(name))

    def _available(self, name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module_name) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not self._available(cmd_name):
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


def _version() -> str:
    from modelsafe import __version__
    from modelsafe.plugins.hookspecs import HOOKSPEC_VERSION

    return f"modelsafe {__version__} (hookspec {HOOKSPEC_VERSION})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version())
        ctx.exit(0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option(
    "--catalog",
    metavar="URL|PATH",
    default=None,
    help="Catalog database: a SQLAlchemy URL or a SQLite path [env MODELSAFE_CATALOG; "
    "default ./catalog.db].",
)
@click.option(
    "--disable-plugin",
    "disable_plugins",
    multiple=True,
    metavar="NAME",
    help="Skip a plugin by entry-point name (repeatable) [env MODELSAFE_DISABLE_PLUGINS].",
)
@click.pass_context
def cli(ctx: click.Context, catalog: str | None, disable_plugins: tuple[str, ...]) -> None:
    """modelsafe: know what every model file is, whether it is safe, and what it fits with.

    \b
    Start here:
      modelsafe demo              build a sample library, scan it, show what was found
      modelsafe inspect FILE      what is this file (family, kind, precision, VRAM)?
      modelsafe audit FILE        can it run code when loaded?

    Set MODELSAFE_DEBUG=1 to see tracebacks.
    """
    ctx.ensure_object(dict)
    ctx.obj["catalog"] = catalog
    if disable_plugins:
        from modelsafe.plugin_manager import set_disabled

        set_disabled(disable_plugins)


def _show_error(message: str, hint: str = "") -> None:
    from modelsafe.output import show_error

    show_error(message, hint)


def _asked_for_json(argv: list[str] | None) -> bool:
    """Whether the command line that just failed gave its command ``--json``.

    The command's context is gone once its error reaches :func:`main`, so the line is parsed again
    the way click parsed it (resiliently: no callback fails, nothing runs) and the command's own
    ``as_json`` parameter is read: a ``--json`` that is the value of another option does not
    count.
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    command: click.Command | None = cli
    name: str | None = "modelsafe"
    parent: click.Context | None = None
    try:
        while command is not None and name is not None:
            ctx = command.make_context(name, list(tokens), parent=parent, resilient_parsing=True)
            if not isinstance(command, click.Group):
                return bool(ctx.params.get("as_json"))
            # A group keeps the tokens after its subcommand's name in ctx.args: the name is the
            # token before them.
            start = len(tokens) - len(ctx.args) - 1
            if start < 0:
                return False
            name, command, tokens = command.resolve_command(ctx, tokens[start:])
            parent = ctx
    except Exception:  # (click's usage errors, Exit; or the failure itself, e.g. a broken import)
        return False
    return False


def _fail(exc: BaseException, exit_code: int, as_json: bool) -> NoReturn:
    """End a failed command: the message (and hint) on stderr; with ``--json`` also one object
    ``{"error": {"type", "reason", "hint", "exit_code"}}`` on stdout, so a script that reads
    stdout always gets JSON (unless the command wrote its own JSON before it failed: ``scan``
    prints its summary, then exits 2 for a root it could not use)."""
    from modelsafe.output import emit_json, error_json, json_written

    if as_json and not json_written():
        try:
            emit_json(error_json(exc, exit_code))
        except BrokenPipeError:
            _drop_stdout()
    if isinstance(exc, ModelsafeError):
        _show_error(exc.reason, exc.hint)
    else:
        assert isinstance(exc, click.ClickException)
        exc.show()
    _exit(exit_code)


def _drop_stdout() -> None:
    """Send what is left for stdout to /dev/null: its reader is gone, and Python's flush at exit
    would otherwise print "Exception ignored ... BrokenPipeError" and exit 120."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # (no file descriptor: a test's captured stdout)
        pass


def _exit(code: int) -> NoReturn:
    """Exit with ``code``, stdout flushed first: a reader that closed early (``| head -1``)
    leaves ``code`` as it is, with nothing more said."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
    except (OSError, ValueError):
        pass
    sys.exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``timeout``, ``docker stop``, a closed SSH session): unwinds like
    Ctrl-C, so every ``finally`` and ``except BaseException`` cleanup runs (temp files removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: Any) -> None:
    from modelsafe.atomic import hold, outcome_fixed

    if outcome_fixed():  # (the output is in place: the command finishes, reporting success)
        hold(signum)
        return
    raise Terminated(signum)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    """Ctrl-C: KeyboardInterrupt, as Python's own handler raises it, unless the outcome is
    fixed (see :func:`_raise_terminated`)."""
    from modelsafe.atomic import hold, outcome_fixed

    if outcome_fixed():
        hold(signum)
        return
    raise KeyboardInterrupt


def _handle_termination() -> None:
    import signal
    import threading

    from modelsafe.atomic import reset_outcome

    reset_outcome()
    if threading.current_thread() is not threading.main_thread():
        return  # (signal handlers can only be set from the main thread)
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_interrupted)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``modelsafe`` script: runs the CLI and maps errors to exit codes."""
    debug = os.environ.get("MODELSAFE_DEBUG") == "1"
    _handle_termination()
    from modelsafe.output import json_written

    json_written(reset=True)
    try:
        rv = cli.main(args=argv, prog_name="modelsafe", standalone_mode=False)
    except ModelsafeError as exc:
        if debug:
            traceback.print_exc()
        _fail(exc, exc.exit_code, _asked_for_json(argv))
    except click.exceptions.Exit as exc:
        _exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(exc, exc.exit_code, _asked_for_json(argv))
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:
        # (click turns a KeyboardInterrupt into Abort; the signal that caused it is its cause)
        cause = exc if isinstance(exc, Terminated) else exc.__cause__ or exc.__context__
        if isinstance(cause, Terminated):
            import signal

            name = signal.Signals(cause.signum).name
            _fail(Interrupted(f"terminated ({name})"), 128 + cause.signum, _asked_for_json(argv))
        _fail(Interrupted("interrupted"), EXIT_INTERRUPTED, _asked_for_json(argv))
    except (PipeClosed, BrokenPipeError):
        # The command stopped at a write nobody reads: it did not finish, and it is not an
        # error ("| head -1" took what it wanted).
        _drop_stdout()
        _exit(0)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        internal = InternalError(
            f"unexpected {type(exc).__name__}: {exc}",
            "this is a bug in modelsafe or a plugin; run again with MODELSAFE_DEBUG=1 "
            "to see the traceback",
        )
        _fail(internal, EXIT_INTERNAL, _asked_for_json(argv))
    _exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
