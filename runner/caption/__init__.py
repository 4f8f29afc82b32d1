"""`runner caption`: captions for a dataset's pictures and videos, written by Qwen2.5-VL in runner's captioner image.

work: which files get a caption and how a caption is placed next to its file. run: the container that writes them, here
or on a host. The captioner's model presets are runner.models.captioner, its memory runner.gpu.captioning.
"""
