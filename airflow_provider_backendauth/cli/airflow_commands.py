"""``airflow backendauth ...``: the ``backendauth`` commands inside Airflow's own CLI.

Registered through the provider info ``cli`` key, which Airflow 3.2+ reads (3.1 ignores the
key; use the ``backendauth`` script there). Airflow imports this module for every ``airflow``
command it parses, so it imports nothing beyond Airflow's CLI config and ``cli.main``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from airflow_provider_backendauth.cli.main import COMMANDS, Command, run


def get_cli_commands() -> list[Any]:
    """The ``backendauth`` group for Airflow's CLI parser."""
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

    def action(command: Command) -> ActionCommand:
        def func(args: argparse.Namespace) -> None:
            status = run(command.handler, args)
            if status:
                sys.exit(status)

        func.__name__ = f"backendauth_{command.name}"
        return ActionCommand(
            name=command.name,
            help=command.help,
            func=func,
            args=tuple(Arg(o.flags, help=o.help, **o.kwargs) for o in command.options),
            description=command.description or command.help,
        )

    return [
        GroupCommand(
            name="backendauth",
            help="Keys and connections for the backendauth provider (signed-JWT auth)",
            subcommands=[action(command) for command in COMMANDS],
        )
    ]
