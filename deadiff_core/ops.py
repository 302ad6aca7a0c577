"""torch.nn layers that skip weight initialisation, for modules whose weights are loaded right
after (the idea of comfy.ops.disable_weight_init, without needing ComfyUI). Building the full
model this way costs nothing, on `meta` or on a real device."""
import torch


class _LoadedLater:
    def reset_parameters(self):
        return None


class Linear(_LoadedLater, torch.nn.Linear):
    pass


class LayerNorm(_LoadedLater, torch.nn.LayerNorm):
    pass


class Embedding(_LoadedLater, torch.nn.Embedding):
    pass
