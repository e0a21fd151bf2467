"""The ``ragloom`` command line.

Each subpackage contributes its commands from its own ``cli.py`` (which must import nothing
heavy at module level); this module only assembles them.
"""

from __future__ import annotations

import importlib

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="ragloom",
    help="Retrieval-augmented agents that plan in parallel.",
    no_args_is_help=True,
    add_completion=False,
)

# (module, attribute): a typer.Typer whose commands are merged in, registered if importable.
_SUBCOMMANDS = [
    ("ragloom.retrievers.cli", "app"),
    ("ragloom.runtime.cli", "app"),
    ("ragloom.planners.cli", "app"),
    ("ragloom.evals.cli", "app"),
]


@app.callback()
def _root() -> None:
    """Retrieval-augmented agents that plan in parallel."""


@app.command()
def version() -> None:
    """Print ragloom's version."""
    from ragloom import __version__

    typer.echo(__version__)


def _register() -> None:
    for module_name, attr in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that subpackage has no commands yet
                continue
            raise
        app.add_typer(getattr(module, attr))


_register()


def main() -> None:
    """Entry point of the ``ragloom`` console script."""
    app()


if __name__ == "__main__":
    main()
