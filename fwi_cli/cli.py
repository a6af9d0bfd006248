"""The ``fwi`` command line (Typer): parse, call the library, print.

User errors (:class:`~fwi_cli.errors.FwiError`) print one line to stderr and exit 2.
"""

from __future__ import annotations

import sys

import typer

from fwi_cli.errors import FwiError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Full-waveform inversion of the 2D acoustic wave equation: model, invert, sweep, report.",
)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"fwi: error: {msg}", err=True)
    raise typer.Exit(code)


@app.command()
def model(config: str = typer.Argument(..., help="experiment YAML")) -> None:
    """Model the observed data once -> runs/<name>/observed.zarr."""
    _fail("'fwi model' is not built yet (experiment pipeline pending)")


@app.command()
def invert(config: str = typer.Argument(..., help="experiment YAML")) -> None:
    """Run one inversion job of the matrix."""
    _fail("'fwi invert' is not built yet (experiment pipeline pending)")


@app.command()
def sweep(config: str = typer.Argument(..., help="experiment YAML")) -> None:
    """Run every job of the matrix, skipping complete ones."""
    _fail("'fwi sweep' is not built yet (experiment pipeline pending)")


@app.command()
def report(run_dir: str = typer.Argument(..., help="run directory")) -> None:
    """Draw the figures and summary table of a run directory."""
    _fail("'fwi report' is not built yet (experiment pipeline pending)")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except FwiError as exc:
        typer.echo(f"fwi: error: {exc}", err=True)
        sys.exit(2)
