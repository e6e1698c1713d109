"""Loom's built-in node library, the typed node declaration (`spec.py`) and the registry."""
