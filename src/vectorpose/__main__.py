"""``python -m vectorpose ...``: the same command line as the ``vectorpose`` script."""

from .cli import main

if __name__ == "__main__":
    main()
