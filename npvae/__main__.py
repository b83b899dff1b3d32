"""``python -m npvae``: the same command line as the ``npvae`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
