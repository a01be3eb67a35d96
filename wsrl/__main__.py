"""``python -m wsrl`` runs the command line."""

from wsrl.cli import main

main()
