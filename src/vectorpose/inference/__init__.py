"""Sliding-window prediction, segmentation metrics, and model loading for evaluate / predict."""
