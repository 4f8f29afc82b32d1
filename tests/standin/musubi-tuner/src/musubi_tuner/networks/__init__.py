"""STAND-IN networks package (runner's CI test double)."""
