"""``python -m tcworker``: the same as the ``tcworker`` console script."""

from tcworker.cli import main

if __name__ == "__main__":
    main()
