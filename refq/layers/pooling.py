"""Placeholder while the module is being written; the ops appear shortly."""
from .base import Attr, Op  # noqa: F401

OPS = []
