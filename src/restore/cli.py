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


def main(argv: list[str] | None = None) -> int:
    """Entry point: a `RestoreError` becomes one clear message and a non-zero exit, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except RestoreError as e:
        typer.secho(f"error: {e.message}", fg=typer.colors.RED, err=True)
        if e.hint:
            typer.echo(f"  hint: {e.hint}", err=True)
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
