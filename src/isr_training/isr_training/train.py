"""``python -m isr_training.train`` (and ``torchrun ... -m isr_training.train``): ``isr train``."""

from .training_cli import main

if __name__ == "__main__":
    from . import distributed

    distributed.exit_process(main())
