"""``python -m lab.chaos produce ...``: the producer process of a chaos run."""

import sys

from lab.chaos.producer import main

if __name__ == "__main__":
    sys.exit(main())
