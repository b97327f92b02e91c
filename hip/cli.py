"""The ``hip`` command: one entry point, one sub-command group per module.

Each component exposes a click group or command in its own ``cli`` module; they are attached here.
Exit codes: 0 ok, 1 failure or differences found, 2 bad configuration or usage.
"""
from __future__ import annotations

import importlib
import sys

import click

from hip.errors import ConfigError, PlatformError

# (module, attribute) of every sub-command; a missing module is a packaging bug, not a skip.
COMMANDS: list[tuple[str, str]] = [
    ("hip.stack_cli", "stack"),
    ("hip.observability.exporter", "exporter"),
    ("hip.status_cli", "status"),
    ("sinks.sink_cli", "sink"),
    ("connectors.fleet_cli", "fleet"),
    ("connectors.simulator.cli", "simulate"),
    ("streams.mappings_cli", "mappings"),
    ("hip.datasets_cli", "datasets"),
    ("sinks.warehouse_cli", "warehouse"),
    ("streams.normalizer_cli", "normalizer"),
    ("streams.stats.cli", "stats"),
    ("hip.demo_cli", "demo"),
]


class LazyGroup(click.Group):
    """Imports a sub-command's module only when it is used, so `hip stack health` stays quick."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(attr for _, attr in COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module_name, attr in COMMANDS:
            if attr == cmd_name:
                command: click.Command = getattr(importlib.import_module(module_name), attr)
                return command
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Capture hospital database changes into the provincial health information platform."""


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    except PlatformError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
