"""Precision names, as configs, the converter and the loader's dtype input take them, and their torch dtypes."""
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # the loader offers them in this order
