"""STAND-IN utils package of diffusion-pipe (runner's CI test double, no GPU, no model math)."""
