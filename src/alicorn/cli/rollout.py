"""Running modules: deploy, update, rollback, status, modules, resume, undeploy, agent."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
