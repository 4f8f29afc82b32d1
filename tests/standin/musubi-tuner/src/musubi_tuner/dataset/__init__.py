"""STAND-IN dataset package of musubi-tuner (runner's CI test double, no GPU, no model math)."""
