"""Datasets: check a folder against a trainer's rules, prepare it, list and probe its media, fingerprint it for caches."""
