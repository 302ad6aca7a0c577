"""The official layout of docs/DESIGN.md written out by hand: the layer map (Layer map) and the
checkpoint's keys and shapes (Checkpoint), which tests check the code against."""

# docs/DESIGN.md, Layer map: (ComfyUI patch key, LDM block, channels, branch) in transformer_index order
SPEC_LAYERS = [
    (("input", 1), "input_blocks.1.1", 320, "style"), (("input", 2), "input_blocks.2.1", 320, "style"),
    (("input", 4), "input_blocks.4.1", 640, "style"), (("input", 5), "input_blocks.5.1", 640, "style"),
    (("input", 7), "input_blocks.7.1", 1280, "content"), (("input", 8), "input_blocks.8.1", 1280, "content"),
    (("middle", 0), "middle_block.1", 1280, "content"),
    (("output", 3), "output_blocks.3.1", 1280, "content"), (("output", 4), "output_blocks.4.1", 1280, "content"),
    (("output", 5), "output_blocks.5.1", 1280, "style"),
    (("output", 6), "output_blocks.6.1", 640, "style"), (("output", 7), "output_blocks.7.1", 640, "style"),
    (("output", 8), "output_blocks.8.1", 640, "style"),
    (("output", 9), "output_blocks.9.1", 320, "style"), (("output", 10), "output_blocks.10.1", 320, "style"),
    (("output", 11), "output_blocks.11.1", 320, "style"),
]
# docs/DESIGN.md, Layer map: the side of each layer's token grid at 512 px (the latent there is 64x64)
SPEC_RESOLUTIONS = [64, 64, 32, 32, 16, 16, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]


def spec_adapter_keys(branch):
    """Official key -> shape of what the adapter needs from one branch (docs/DESIGN.md, Checkpoint)."""
    keys = {f"{branch}_blip.ln_vision.weight": (1024,), f"{branch}_blip.ln_vision.bias": (1024,),
            f"{branch}_blip.query_tokens": (1, 16, 768)}
    bert = f"{branch}_blip.Qformer.bert."
    keys.update({bert + "embeddings.word_embeddings.weight": (30523, 768),
                 bert + "embeddings.position_embeddings.weight": (512, 768),
                 bert + "embeddings.LayerNorm.weight": (768,), bert + "embeddings.LayerNorm.bias": (768,),
                 bert + "embeddings.position_ids": (1, 512)})
    for i in range(12):
        p = f"{bert}encoder.layer.{i}."
        linears = {"attention.self.query": (768, 768), "attention.self.key": (768, 768),
                   "attention.self.value": (768, 768), "attention.output.dense": (768, 768),
                   "crossattention.self.query": (768, 768), "crossattention.self.key": (768, 1024),
                   "crossattention.self.value": (768, 1024), "crossattention.output.dense": (768, 768),
                   "intermediate.dense": (3072, 768), "intermediate_query.dense": (3072, 768),
                   "output.dense": (768, 3072), "output_query.dense": (768, 3072)}
        for name, shape in linears.items():
            keys[p + name + ".weight"] = shape
            keys[p + name + ".bias"] = (shape[0],)
        for norm in ("attention.output.LayerNorm", "crossattention.output.LayerNorm", "output.LayerNorm", "output_query.LayerNorm"):
            keys[p + norm + ".weight"] = keys[p + norm + ".bias"] = (768,)
    proj = f"{branch}_proj_layer."
    keys.update({proj + "LayerNorm.weight": (768,), proj + "LayerNorm.bias": (768,),
                 proj + "dense1.weight": (3072, 768), proj + "dense1.bias": (3072,),
                 proj + "dense2.weight": (768, 3072), proj + "dense2.bias": (768,)})
    return keys


def spec_image_projection_keys():
    return {f"model.diffusion_model.{block}.transformer_blocks.0.attn2.i_to_{kv}.weight": (channels, 768)
            for _, block, channels, _ in SPEC_LAYERS for kv in "kv"}


def spec_vision_keys(branch):
    p = f"{branch}_blip.visual_encoder."
    keys = {p + "conv1.weight": (1024, 3, 14, 14), p + "class_embedding": (1024,),
            p + "positional_embedding": (257, 1024), p + "ln_pre.weight": (1024,), p + "ln_pre.bias": (1024,)}
    for i in range(23):
        b = f"{p}transformer.resblocks.{i}."
        keys.update({b + "attn.in_proj_weight": (3072, 1024), b + "attn.in_proj_bias": (3072,),
                     b + "attn.out_proj.weight": (1024, 1024), b + "attn.out_proj.bias": (1024,),
                     b + "ln_1.weight": (1024,), b + "ln_1.bias": (1024,), b + "ln_2.weight": (1024,), b + "ln_2.bias": (1024,),
                     b + "mlp.c_fc.weight": (4096, 1024), b + "mlp.c_fc.bias": (4096,),
                     b + "mlp.c_proj.weight": (1024, 4096), b + "mlp.c_proj.bias": (1024,)})
    return keys
