"""``python -m wsrl`` runs the command line."""

from wsrl.cli import main

if __name__ == "__main__":  # spawned workers (ParallelGuestVecEnv) import this module too
    main()
