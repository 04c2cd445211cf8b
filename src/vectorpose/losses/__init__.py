"""Loss functions of the pretext tasks (and, later, of segmentation)."""
