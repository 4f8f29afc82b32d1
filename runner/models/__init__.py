"""Model files: the presets (what a task needs, in which format), downloading them, reading their headers, finding them."""
