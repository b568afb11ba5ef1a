"""``python -m madinfra`` runs the CLI, as the ``madinfra`` console script does."""

from madinfra.cli import main

main()
