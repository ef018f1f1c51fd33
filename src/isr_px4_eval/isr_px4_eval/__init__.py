"""Full-fidelity evaluation, parity, dynamics tuning, and the ``isr`` command line.

Policies trained in fast mode fly either real PX4 (SITL or hardware, over uXRCE-DDS) or the
embedded quadrotor with a PX4-like controller.
"""
