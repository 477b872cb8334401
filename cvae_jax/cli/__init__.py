"""The `cvae-jax` command line (`main`), and the process settings only an entry point may make."""

from cvae_jax.cli.commands import main  # noqa: F401
