"""The `reviewpoint` command: each subcommand is a thin call into the same services."""

from __future__ import annotations

from reviewpoint.cli import api_keys, audit, db, demo, export, features, server, users
from reviewpoint.cli.console import OneLineTyper

app = OneLineTyper(help="ReViewPoint user export service.", no_args_is_help=True)
app.command()(server.serve)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(api_keys.app, name="api-keys")
app.add_typer(features.app, name="features")
app.add_typer(audit.app, name="audit")
app.command()(export.export)
app.command()(users.seed)
app.command()(demo.demo)
