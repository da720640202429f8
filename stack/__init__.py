"""The stack program of this repository (seed systems, stack settings): used by __main__.py, not packaged."""
