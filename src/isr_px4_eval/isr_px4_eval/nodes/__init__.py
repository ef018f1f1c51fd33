"""ROS 2 nodes: the PX4 evaluation node and the PX4 emulator node."""
