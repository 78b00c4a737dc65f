"""Entry point (cli layer): run the app, turn every failure into one line and an exit code."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from types import FrameType

from stackvault.errors import EXIT_ERROR, EXIT_INTERRUPTED, StackvaultError


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM behaves like Ctrl-C: the pipelines stop, locks are released, nothing
    # unfinished is recorded.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run stackvault with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    import typer.main
    from typer._click.exceptions import ClickException
    from typer.exceptions import Abort

    from stackvault.cli import commands  # noqa: F401  (registers every command)
    from stackvault.cli.app import app

    # Worker threads spend their time in native code that releases the GIL; a short switch
    # interval lets them take it back quickly (measured: 300 MB random file 1.07 s -> 0.80 s).
    sys.setswitchinterval(0.001)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="stackvault", standalone_mode=False)
    except StackvaultError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted; nothing unfinished was recorded")
        return EXIT_INTERRUPTED
    except Abort:
        _error("aborted")
        return EXIT_ERROR
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:  # a bug: say so in one line, show the traceback only on request
        if os.environ.get("STACKVAULT_DEBUG"):
            traceback.print_exc()
        _error(
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in stackvault, "
            "please report it (set STACKVAULT_DEBUG=1 to see the traceback)"
        )
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)
    return rv if isinstance(rv, int) else 0


def _error(message: str) -> None:
    line = f"stackvault: error: {message}\n"
    # File names may hold undecodable bytes (surrogate escapes): write them back as bytes.
    sys.stderr.write(line.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    sys.stderr.flush()


def run() -> None:
    """Console-script entry."""
    sys.exit(main())
