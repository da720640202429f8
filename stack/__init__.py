"""The stack program of this repository (its systems, stack settings): used by __main__.py, not packaged."""
