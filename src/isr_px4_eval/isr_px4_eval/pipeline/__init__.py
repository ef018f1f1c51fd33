"""The end-to-end pipeline (train, evaluate, parity, bags, videos, report) and the demo tour."""
