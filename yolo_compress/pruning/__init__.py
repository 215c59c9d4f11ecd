"""Network slimming and DepGraph channel pruning of YOLOv8."""
