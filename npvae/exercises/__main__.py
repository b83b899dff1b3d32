"""``python -m npvae.exercises ...`` is ``npvae exercises ...``."""

import sys

if __name__ == "__main__":  # (the grader's child processes import this module as __mp_main__)
    from npvae.cli import main

    sys.exit(main(["exercises", *sys.argv[1:]]))
