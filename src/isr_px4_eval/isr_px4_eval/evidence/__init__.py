"""Evidence of a run: rosbag2 recording, annotated videos, the HTML report."""
