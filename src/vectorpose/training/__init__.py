"""Training loops and the safe file formats they write."""
