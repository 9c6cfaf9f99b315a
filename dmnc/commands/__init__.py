"""Subcommands of the `dmnc` CLI, one module each (see dmnc.cli)."""
