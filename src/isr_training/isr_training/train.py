"""``python -m isr_training.train`` (and ``torchrun ... -m isr_training.train``): ``isr train``."""

import sys

from .training_cli import main

if __name__ == "__main__":
    sys.exit(main())
