"""STAND-IN for kohya-ss/musubi-tuner 30c658c (v0.3.4): runner's CI test double, no GPU, no model math.

Same package name, scripts, flags, dataset-config rules and output file layout as upstream for Wan2.1
(wan_cache_latents, wan_cache_text_encoder_outputs, wan_train_network, networks.lora_wan); the files it writes
hold zeros. See tests/standin/README.md in runner's repository. Not upstream code.
"""

__version__ = "0.3.4+standin"
