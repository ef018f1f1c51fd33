"""``torchrun ... -m isr_training.bench_train [flags]``: a rank of ``isr bench train --nproc N``."""

import argparse

from isr_direct_dynamics.config import run_command

from .training_cli import _bench_train, add_bench_train_arguments


def main(argv: list[str] | None = None) -> int:
    """Parse the ``isr bench train`` flags and run this rank's part."""
    parser = argparse.ArgumentParser(prog="isr bench train", description=__doc__)
    add_bench_train_arguments(parser)
    return run_command(_bench_train, parser.parse_args(argv))


if __name__ == "__main__":
    from . import distributed

    distributed.exit_process(main())
