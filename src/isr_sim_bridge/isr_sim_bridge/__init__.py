"""Embedded ISR world, batched tiled camera, ground-truth and YOLO perception, rosbag2 recording."""
