"""Pretrained weights in the formats of other training frameworks."""
