"""Reference encoding throughput: images/s through DEADiff Encode's whole path, and the Q-Formers' share.

    python -m benchmarks.encoder_throughput [--tiny] [--rounds N] [--batches 1 4 16]
                                            [--threads N] [--cpu-time] [--pytorch-attention]

Random weights at full size in the official layout, with the embedded ViT, loaded as Load DEADiff Model
does with dtype "auto" (ComfyUI's text-encoder precision for the weights, computed in fp32) and made into
ComfyUI's CLIP vision model. A 512x512 IMAGE batch goes through preprocessing, the ViT-L/14 to its
penultimate layer, and both Q-Formers with their ProjLayers; the Q-Formers alone are timed on the same
hidden states, interleaved with the whole path.
"""

import torch

from benchmarks.harness import add_arguments, command_line, describe_run, interleaved, ratios_to, setup, spread
from deadiff_core.checkpoint import adapter_from_state_dict
from deadiff_core.synthetic import VIT_L_TINY, OfficialLayout, official_state_dict


def load_deadiff(comfy, layout):
    from deadiff_core.comfy_adapter import ComfyDEADiff

    official = official_state_dict(layout, seed=0, with_vision=True, with_other_parts=False)
    mm = comfy.model_management
    dtype = mm.text_encoder_dtype(mm.text_encoder_device())  # what the loader's "auto" picks
    adapter = adapter_from_state_dict(official, "<memory>", "official checkpoint", dtype=dtype,
                                      operations=comfy.ops.manual_cast)
    return ComfyDEADiff(adapter), dtype


def main():
    parser = command_line(__doc__, "for CI: a 1-layer Q-Former, batch 1, 1 round")
    parser.add_argument("--rounds", type=int, help="timed rounds after one warm-up round (default 3, --tiny 1)")
    parser.add_argument("--batches", type=int, nargs="+", help="images per call (default 1 4 16, --tiny 1)")
    add_arguments(parser)
    args = parser.parse_args()
    comfy, clock, clock_name = setup(args)
    rounds = args.rounds or (1 if args.tiny else 3)
    batches = args.batches or ([1] if args.tiny else [1, 4, 16])

    from deadiff_core.comfy_vision import vision_hidden_states

    deadiff, dtype = load_deadiff(comfy, VIT_L_TINY if args.tiny else OfficialLayout())
    clip_vision = deadiff.embedded_clip_vision
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        images = {b: torch.rand(b, 512, 512, 3, generator=g) for b in batches}
        hidden = {b: vision_hidden_states(clip_vision, images[b]).float() for b in batches}
        device = deadiff.encoder_patcher.load_device
        cases = {}
        for b in batches:
            cases[f"encode {b}"] = lambda b=b: deadiff.encode(images[b], clip_vision)
            # the Q-Formers' part of encode: hand the hidden states over to their device, run them
            cases[f"Q-Formers {b}"] = lambda b=b: deadiff.adapter.encoder(hidden[b].to(device))
        times, others = interleaved(cases, rounds, clock)

    config = deadiff.info.qformer
    print(f"DEADiff Encode, 512x512 IMAGE -> CLIP ViT-L/14 (ComfyUI, penultimate layer) -> style and content "
          f"Q-Formers ({config.num_layers} layers, hidden {config.hidden_size}) + ProjLayers; weights {dtype}, "
          f"compute float32; {describe_run(rounds, clock_name, others)}")
    print("| batch | seconds per call (median, min-max) | images/s (median, min-max) | Q-Formers seconds | "
          "Q-Formers' share, % |")
    print("| --- | --- | --- | --- | --- |")
    for b in batches:
        encode = times[f"encode {b}"]
        share = ratios_to(times, f"encode {b}")[f"Q-Formers {b}"]
        qformers = times[f"Q-Formers {b}"]
        print(f"| {b} | {spread(encode, 3)} | {spread([b / t for t in encode])} | {spread(qformers, 3)} | "
              f"{spread([100 * s for s in share], 1)} |")


if __name__ == "__main__":
    main()
