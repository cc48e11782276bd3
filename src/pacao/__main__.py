"""`python -m pacao`: the same command line as the `pacao` script."""

from pacao.cli import main

if __name__ == "__main__":
    main()
