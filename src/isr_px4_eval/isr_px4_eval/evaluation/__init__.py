"""Full-fidelity evaluation of a trained policy (run) and direct-vs-embedded parity."""
