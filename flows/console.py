"""What every `curagate` command shares: the stderr console, the config load, the error exit."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from schemas.params import Params, ParamsError, find_params, load_params

console = Console(stderr=True)


def fail(exc: BaseException | str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit with ``code`` (2: bad input or config; 1: refused)."""
    # one line whatever the terminal's width (soft_wrap): a log or a grep sees the whole message
    console.print(
        f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True
    )  # a label like [positive] is text
    raise typer.Exit(code) from (exc if isinstance(exc, BaseException) else None)


def load_cli_params(params: Path | None) -> Params:
    """The one config of a command: --params, ./params.yaml or the built-in defaults."""
    try:
        return load_params(find_params(params))
    except ParamsError as exc:
        fail(exc)
