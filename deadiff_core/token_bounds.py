"""How large DEADiff tokens can be, and how many: bounds that refuse tokens no DEADiff encoder produces (from
a hand-made or damaged file) before they reach attention, where they would overflow or exhaust memory.

Magnitude. A branch's tokens are y = x + dense2(QuickGELU(dense1(LN_p(x)))) (the ProjLayer), where x is the
Q-Former's last output LayerNorm. A LayerNorm's normalised vector z over D channels has mean 0 and a mean
square of at most 1, so |z_i| <= sqrt(D - 1); with scale g and shift b each channel lies within
|g_i| sqrt(D - 1) + |b_i|. A linear layer maps per-channel bounds a to sum_j |W_ij| a_j + |bias_i|, and
|QuickGELU(h)| = |h| sigmoid(1.702 h) <= |h|. Averaging or mixing references (convex combinations) stays
within the bound.
"""
import math


# an fp16/bf16 encode rounds each step; the bound itself is loose by orders of magnitude
ROUNDING_SLACK = 1.01
# The released DEADiff model makes 16 tokens per reference (BLIP-2-family Q-Formers 32 at most); room for
# retrained ones, and a hard stop for files that would make every attention layer hold millions of keys.
MAX_TOKENS_PER_REFERENCE = 64
# Concat joins every reference's tokens to each layer's keys: 256 references are 4096 image tokens next to the
# prompt's 77, where the prompt has lost its say; the bound also keeps a file's token count finite.
MAX_REFERENCES = 256


def _layer_norm(norm):
    width = norm.weight.shape[0]
    bound = norm.weight.detach().double().abs().cpu() * math.sqrt(width - 1)
    return bound + norm.bias.detach().double().abs().cpu() if norm.bias is not None else bound


def _linear(linear, bound):
    out = linear.weight.detach().double().abs().cpu() @ bound
    return out + linear.bias.detach().double().abs().cpu() if linear.bias is not None else out


def token_bound(branch_encoder):
    """Per-channel bound [D] (float64) on what encoder.BranchEncoder can output, from its weights."""
    x = _layer_norm(branch_encoder.qformer.encoder.layer[-1].output_query.LayerNorm)
    proj = branch_encoder.proj
    return x + _linear(proj.dense2, _linear(proj.dense1, _layer_norm(proj.LayerNorm)))


def check_magnitudes(tokens, bound, branch):
    """ValueError if any channel of `tokens` [N, T, D] exceeds `bound` [D]."""
    peak = tokens.detach().abs().amax(dim=(0, 1)).double().cpu()
    excess = peak / (bound * ROUNDING_SLACK)
    channel = int(excess.argmax())
    if excess[channel] > 1:
        raise ValueError(f"{branch} tokens reach {peak[channel].item():.4g} in channel {channel}, where this DEADiff "
                         f"model's encoder can produce at most {bound[channel].item():.4g} (a bound from its "
                         "LayerNorm and projection weights): they were not made by this model, or were edited")


def check_counts(num_references, tokens_per_reference):
    """ValueError unless the counts are within what the pack can use (see MAX_REFERENCES, MAX_TOKENS_PER_REFERENCE)."""
    if tokens_per_reference < 1:
        raise ValueError("reference tokens hold no tokens per reference (shape [N, 0, D])")
    if tokens_per_reference > MAX_TOKENS_PER_REFERENCE:
        raise ValueError(f"{tokens_per_reference} tokens per reference; DEADiff makes 16 and this pack takes at most "
                         f"{MAX_TOKENS_PER_REFERENCE}, as every attention layer joins them all to its keys")
    if num_references > MAX_REFERENCES:
        raise ValueError(f"{num_references} references; this pack takes at most {MAX_REFERENCES} (concat would join "
                         f"over {MAX_REFERENCES * 16} image tokens to the prompt's 77 text tokens)")
