"""Package data: ``eval.yaml`` (evaluation preset) and ``parity.yaml`` (parity tolerances)."""
