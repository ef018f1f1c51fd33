"""Dynamics tuning: fit the direct model to PX4 data (bags, ULog) or the embedded quadrotor."""
