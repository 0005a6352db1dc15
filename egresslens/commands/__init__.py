"""CLI commands, one module per feature, each exposing `register(app: typer.Typer)`.

`egresslens.cli` registers every module found here, so a feature adds its command by adding a
module, without editing the CLI core.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer


def register_all(app: typer.Typer) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(app)
