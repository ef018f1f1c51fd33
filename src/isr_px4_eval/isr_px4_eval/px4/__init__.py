"""The PX4 side of the workspace.

uXRCE-DDS topics and message definitions, ENU/NED frames, conversions, logs (bags, ULog), the
offboard client, the PX4 emulator, the policy pilot and the in-process loopback link.
"""
