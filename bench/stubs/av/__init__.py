"""Empty stand-in for PyAV: musubi imports it at load, but training from caches never decodes video."""
