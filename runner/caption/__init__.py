"""`runner caption`: captions for a dataset's pictures and videos, written by Qwen2.5-VL in runner's captioner image.

models: the captioner presets (download, memory). work: which files get a caption and how the captions are placed
next to them. run: the container that writes them, here or on a host.
"""
