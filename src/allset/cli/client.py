"""``allset``: the Client's Software (R-STORE-2). The full client lands with the sync
issue; this entry point already exists so that the command surface is stable."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="allset")
def main() -> None:
    """Transfer and synchronise files with an allset server."""


if __name__ == "__main__":  # pragma: no cover
    main()
