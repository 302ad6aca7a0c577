"""The new per-layer projections DEADiff adds to SD1.5's attn2: image tokens -> keys / values."""
import torch


class ImageKV(torch.nn.Module):
    def __init__(self, token_dim, channels, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        # bias-free, so zero tokens give exactly-zero keys and values (docs/DESIGN.md, Zero tokens)
        self.i_to_k = operations.Linear(token_dim, channels, bias=False, dtype=dtype, device=device)
        self.i_to_v = operations.Linear(token_dim, channels, bias=False, dtype=dtype, device=device)


class ImageProjections(torch.nn.Module):
    """ImageKV for each cross-attention layer, keyed by transformer index (see layers.py)."""

    def __init__(self, channels_by_layer, token_dim, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.layers = torch.nn.ModuleDict({
            str(index): ImageKV(token_dim, channels, dtype, device, operations)
            for index, channels in sorted(channels_by_layer.items())
        })

    def __getitem__(self, index):
        return self.layers[str(index)]

    def __contains__(self, index):
        return str(index) in self.layers
