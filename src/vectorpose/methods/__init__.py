"""Pretraining methods: each composes pretext heads and losses; one file per method family.

A new method is a new module here that calls :func:`register`.
"""

from .base import METHODS, PretextMethod, get_method, register
from . import baselines, mae, vectorpose  # noqa: F401  (registers scratch, genesis; mae; vectorpose, vp, bfr)

__all__ = ["METHODS", "PretextMethod", "get_method", "register"]
