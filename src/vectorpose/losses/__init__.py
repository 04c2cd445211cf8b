"""Loss functions of the pretext tasks."""
