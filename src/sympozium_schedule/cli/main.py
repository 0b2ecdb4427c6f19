"""Placeholder until the CLI lands."""
import typer

app = typer.Typer()
