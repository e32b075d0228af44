"""``python -m hartkit ...`` runs what the ``hartkit`` command and ``python run.py`` run (hartkit.cli)."""

from hartkit.cli import main

if __name__ == "__main__":
    main()
