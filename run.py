"""hartkit from a checkout: `python run.py tokenizer=hybrid` is `hartkit tokenizer=hybrid` (see hartkit/cli.py)."""

from hartkit.cli import main

if __name__ == "__main__":
    main()
