"""STAND-IN utils package (runner's CI test double)."""
