"""The `restore` command line: thin over the Python API. Each area contributes its own Typer sub-app."""

from __future__ import annotations

import sys

import typer

from restore.errors import RestoreError

app = typer.Typer(
    name="restore",
    help="Prompt learning for CLIP: RESTORE and the methods it is compared with.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    from restore import __version__

    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Prompt learning for CLIP: RESTORE and the methods it is compared with."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: a `RestoreError` becomes one clear message and a non-zero exit, never a traceback."""
    try:
        app(args=argv, prog_name="restore")
    except RestoreError as e:
        typer.secho(f"error: {e.message}", fg=typer.colors.RED, err=True)
        if e.hint:
            typer.echo(f"  hint: {e.hint}", err=True)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
