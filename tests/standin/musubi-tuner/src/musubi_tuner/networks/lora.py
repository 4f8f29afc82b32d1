"""STAND-IN for musubi_tuner.networks.lora (runner's CI test double, no GPU, no model math).

Upstream's training loop saves every LoRA through `LoRANetwork.save_weights(file, dtype, metadata)`; here the
class holds only what that save needs (the Wan task, rank, alpha) and writes zeros with upstream's key names
(networks/lora_wan.py).
"""

from __future__ import annotations

from musubi_tuner.networks import lora_wan


class LoRANetwork:
    def __init__(self, task: str, network_dim: int, network_alpha: float):
        self.task, self.network_dim, self.network_alpha = task, network_dim, network_alpha

    def save_weights(self, file, dtype, metadata):
        if metadata is not None and len(metadata) == 0:
            metadata = None
        lora_wan.save_weights(file, self.task, self.network_dim, self.network_alpha, dtype, metadata)
