"""Minnow: a mini model that classifies, moderates and summarizes events, and says when it is unsure."""

from __future__ import annotations

__version__ = "0.1.0"
