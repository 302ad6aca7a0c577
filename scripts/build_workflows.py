#!/usr/bin/env python3
"""Writes example_workflows/*.json, the UI-format workflows users drag into ComfyUI (and that ComfyUI's
server lists in the editor's template browser, from the pack's example_workflows/ folder), from the short
descriptions below and the node definitions a running ComfyUI server reports (/object_info), so
socket and widget order always match the nodes. Standard library only.

    python -m scripts.build_workflows --url http://127.0.0.1:8188 [--out example_workflows]

Each loader node names the file it loads in properties.models ({name, url, directory}, from MODEL_FILES),
which the editor reads to offer the download when the file is missing. The thumbnails next to the files
(<name>.jpg) are rendered from the editor by python -m scripts.render_thumbnails.

The committed files are built on the reference runtime, REFERENCE_COMFYUI (the default one that
./scripts/setup.sh installs). Other runtimes' definitions differ in details (0.33's Save Image has an
IMAGE output), so there the files are checked with problems() instead: everything they use must exist.
"""
import argparse
import json
import os
import urllib.request

REFERENCE_COMFYUI = "0.3.75"
# the files the workflows name: the real releases (see the README's model table)
SD15 = "v1-5-pruned-emaonly.safetensors"
DEADIFF = "deadiff_v1.ckpt"
LORA = "add_detail.safetensors"
CONTROLNET = "control_v11p_sd15_canny_fp16.safetensors"
STYLE_IMAGE, CONTENT_IMAGE, SECOND_STYLE_IMAGE = "deadiff_style.png", "deadiff_content.png", "deadiff_style_2.png"
NEGATIVE_IMAGE = "deadiff_negative.png"
SAVED_TOKENS = "deadiff/tokens_00001_.safetensors [output]"
# where each model file comes from: {file name as the loader widget holds it: (models subfolder, direct download
# URL)}, written into the loader nodes' properties.models. The DEADiff file is the official release (the official
# repository's README: "Download the pretrained model from Hugging Face (qth/DEADiff)"); the LoRA is the Detail
# Tweaker LoRA on Civitai, whose download is named add_detail.safetensors.
MODEL_FILES = {
    SD15: ("checkpoints", f"https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/{SD15}"),
    DEADIFF: ("deadiff", f"https://huggingface.co/qth/DEADiff/resolve/main/{DEADIFF}"),
    LORA: ("loras", "https://civitai.com/api/download/models/62833"),
    CONTROLNET: ("controlnet", f"https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/{CONTROLNET}"),
}
# official inference (docs/DESIGN.md, Inference defaults)
NEGATIVE = ("over-exposure, under-exposure, saturated, duplicate, out of frame, lowres, cropped, worst quality, low "
            "quality, jpeg artifacts, morbid, mutilated, out of frame, ugly, bad anatomy, bad proportions, deformed, "
            "blurry, duplicate")
MODELS_NOTE = (f"Models: {SD15} (or any SD1.5 fine-tune) in models/checkpoints; {DEADIFF} (Hugging Face qth/DEADiff, "
               "7.43 GB) or a converted adapter in models/deadiff. The DEADiff file carries its own CLIP vision tower; "
               "for an adapter converted without --with-vision, connect Load CLIP Vision (ViT-L/14) to clip_vision.")


class Node:
    def __init__(self, key, class_type, **inputs):
        self.key, self.class_type, self.inputs = key, class_type, inputs


def sampling(model, prompt, seed, positive=("positive", 0), negative=("negative", 0), prefix="DEADiff", batch_size=1):
    """Text prompts, empty latent, KSampler with the official DDIM settings, decode, save."""
    return [
        Node("checkpoint", "CheckpointLoaderSimple", ckpt_name=SD15),
        Node("positive", "CLIPTextEncode", clip=("checkpoint", 1), text=prompt),
        Node("negative", "CLIPTextEncode", clip=("checkpoint", 1), text=NEGATIVE),
        Node("latent", "EmptyLatentImage", width=512, height=512, batch_size=batch_size),
        Node("sampler", "KSampler", model=model, positive=positive, negative=negative, latent_image=("latent", 0),
             seed=seed, steps=50, cfg=8.0, sampler_name="ddim", scheduler="ddim_uniform", denoise=1.0),
        Node("decode", "VAEDecode", samples=("sampler", 0), vae=("checkpoint", 2)),
        Node("save", "SaveImage", images=("decode", 0), filename_prefix=prefix),
    ]


def reference(key, image):
    return [Node(f"{key}_image", "LoadImage", image=image),
            Node(key, "DEADiffEncode", deadiff=("deadiff", 0), image=(f"{key}_image", 0))]


def apply(tokens=("style", 0), model=("checkpoint", 0), mode="style", **advanced):
    node_type = "DEADiffApplyAdvanced" if advanced else "DEADiffApply"
    extra = dict(style_weight=1.0, content_weight=1.0, layer_weights=", ".join(["1"] * 16), combine="average") if advanced else {}
    return Node("apply", node_type, model=model, deadiff=("deadiff", 0), tokens=tokens, mode=mode, weight=1.0,
                start_at=0.0, end_at=1.0, **{**extra, **advanced})


LOADER = Node("deadiff", "DEADiffLoader", deadiff_name=DEADIFF, dtype="auto")

WORKFLOWS = {
    "deadiff_style_transfer": (
        "Style transfer with the official defaults: the reference's style, the prompt's subject. "
        f"Put your style reference in ComfyUI/input as {STYLE_IMAGE} (or pick any image in Load Image). "
        "weight 0.5-1.5 tunes how strongly the style shows.",
        [LOADER, *reference("style", STYLE_IMAGE), apply(), *sampling(("apply", 0), "A monkey playing with a banana", 3548979786)]),
    "deadiff_content_mode": (
        "Content mode: the reference's subject, the prompt's style (here a pencil drawing). "
        f"Put the content reference in ComfyUI/input as {CONTENT_IMAGE}.",
        [LOADER, *reference("style", CONTENT_IMAGE), apply(mode="content"),
         *sampling(("apply", 0), "pencil drawing", 1947077116)]),
    "deadiff_style_and_content": (
        "Style from one reference, content from another: DEADiff Apply (Advanced) feeds tokens to the 11 style "
        "layers and content_tokens to the 5 content layers.",
        [LOADER, *reference("style", STYLE_IMAGE), *reference("content", CONTENT_IMAGE),
         apply(mode="style and content", content_tokens=("content", 0)),
         *sampling(("apply", 0), "a cat sitting on a chair", 766298634)]),
    "deadiff_style_mixing": (
        "Style mixing (the official demo): the ratio-weighted sum of two references' tokens. Move ratio_1 and "
        "ratio_2 to blend; they are normalised to sum to 1.",
        [LOADER, *reference("style", STYLE_IMAGE), *reference("style_2", SECOND_STYLE_IMAGE),
         Node("mix", "DEADiffMix", tokens_1=("style", 0), ratio_1=0.5, tokens_2=("style_2", 0), ratio_2=0.5,
              ratio_3=0.0, ratio_4=0.0),
         apply(tokens=("mix", 0)), *sampling(("apply", 0), "A palm tree", 1832300903)]),
    "deadiff_lora_controlnet": (
        f"DEADiff with a LoRA and a canny ControlNet on the same model. {LORA} stands for any SD1.5 LoRA "
        f"(models/loras); {CONTROLNET} is the SD1.5 canny ControlNet (models/controlnet). The canny edges come from "
        "the content image; the style from the style reference.",
        [LOADER, *reference("style", STYLE_IMAGE), apply(),
         Node("lora", "LoraLoaderModelOnly", model=("apply", 0), lora_name=LORA, strength_model=0.8),
         Node("controlnet", "ControlNetLoader", control_net_name=CONTROLNET),
         Node("edges_image", "LoadImage", image=CONTENT_IMAGE),
         Node("edges", "Canny", image=("edges_image", 0), low_threshold=0.4, high_threshold=0.8),
         Node("control", "ControlNetApplyAdvanced", positive=("positive", 0), negative=("negative", 0),
              control_net=("controlnet", 0), image=("edges", 0), strength=0.8, start_percent=0.0, end_percent=1.0),
         *sampling(("lora", 0), "A robot", 3155758843, positive=("control", 0), negative=("control", 1))]),
    "deadiff_regional_mask": (
        "A mask limits the style to part of the image (here the left half; white = styled). Paint your own mask "
        "with Load Image's mask editor or any MASK node; give it the image's aspect ratio.",
        [LOADER, *reference("style", STYLE_IMAGE),
         Node("background", "SolidMask", value=0.0, width=512, height=512),
         Node("region", "SolidMask", value=1.0, width=256, height=512),
         Node("mask", "MaskComposite", destination=("background", 0), source=("region", 0), x=0, y=0, operation="add"),
         apply(mask=("mask", 0)), *sampling(("apply", 0), "A man wearing a black leather jacket and a red tie", 4246460524)]),
    "deadiff_batch_per_latent": (
        "One reference per image of the batch: Batch Images joins two references, DEADiff Encode reads both, and "
        "combine 'per latent' gives reference 1 to latent 1 and reference 2 to latent 2. Empty Latent Image's "
        "batch_size must equal the number of references.",
        [LOADER, Node("style_image", "LoadImage", image=STYLE_IMAGE), Node("style_2_image", "LoadImage", image=SECOND_STYLE_IMAGE),
         Node("references", "ImageBatch", image1=("style_image", 0), image2=("style_2_image", 0)),
         Node("style", "DEADiffEncode", deadiff=("deadiff", 0), image=("references", 0)),
         apply(combine="per latent"), *sampling(("apply", 0), "A lighthouse on a cliff", 2718281828, batch_size=2)]),
    "deadiff_negative_reference": (
        "A negative reference: the negative (CFG) pass reads its tokens instead of DEADiff's zero tokens, so the "
        f"image is steered away from its look. Put a picture of what you do not want in ComfyUI/input as "
        f"{NEGATIVE_IMAGE}; disconnect negative_tokens to get the official behaviour back.",
        [LOADER, *reference("style", STYLE_IMAGE), *reference("unwanted", NEGATIVE_IMAGE),
         apply(negative_tokens=("unwanted", 0)), *sampling(("apply", 0), "A castle in the mountains", 1414213562)]),
    "deadiff_save_tokens": (
        "Encode a reference once and save its tokens (output/deadiff/tokens_00001_.safetensors); the "
        "deadiff_reuse_tokens workflow then runs without the encoder.",
        [LOADER, *reference("style", STYLE_IMAGE),
         Node("save_tokens", "DEADiffSaveTokens", tokens=("style", 0), filename_prefix="deadiff/tokens")]),
    "deadiff_reuse_tokens": (
        "Reuse tokens saved by the deadiff_save_tokens workflow (pick the file in DEADiff Load Tokens; files in "
        "ComfyUI's output folder are marked [output]).",
        [LOADER, Node("tokens", "DEADiffLoadTokens", tokens_file=SAVED_TOKENS), apply(tokens=("tokens", 0)),
         *sampling(("apply", 0), "A curly-haired boy", 766298634)]),
}


# the types of widget values a UI-format workflow saves
WIDGET_TYPES = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool, "COMBO": str}


def is_widget(spec):
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def saved_extras(spec):
    """What the editor saves after a widget's own value: a seed's control mode, Load Image's upload button."""
    options = spec[1] if len(spec) > 1 else {}
    return ["fixed"] * bool(options.get("control_after_generate")) + ["image"] * bool(options.get("image_upload"))


# nodes the editor draws larger than their widgets: Load Image's preview, the layer map (web/deadiff.js)
EXTRA_SPACE = {"LoadImage": (340, 260), "DEADiffApplyAdvanced": (470, 150)}


def _columns(nodes):
    """Depth of each node (longest chain of links from a source): its column in the editor."""
    by_key = {n.key: n for n in nodes}
    depth = {}

    def visit(node):
        if node.key not in depth:
            sources = [v[0] for v in node.inputs.values() if isinstance(v, tuple)]
            depth[node.key] = 1 + max((visit(by_key[s]) for s in sources), default=-1)
        return depth[node.key]

    for node in nodes:
        visit(node)
    return depth


def ui_workflow(note, nodes, object_info):
    """A UI-format (version 0.4) workflow: nodes with their sockets and widget values, links, and a Note."""
    ids = {node.key: i + 2 for i, node in enumerate(nodes)}
    columns, heights = _columns(nodes), {}
    column_widths = {}
    for node in nodes:
        width = EXTRA_SPACE.get(node.class_type, (340, 0))[0]
        column_widths[columns[node.key]] = max(column_widths.get(columns[node.key], 340), width)
    ui_nodes = [{"id": 1, "type": "Note", "pos": [40, 40], "size": [460, 200], "flags": {}, "order": 0, "mode": 0,
                 "inputs": [], "outputs": [], "properties": {}, "widgets_values": [f"{note}\n\n{MODELS_NOTE}"]}]
    links = []
    for order, node in enumerate(sorted(nodes, key=lambda n: columns[n.key]), start=1):
        info = object_info[node.class_type]
        specs = {**info["input"]["required"], **info["input"].get("optional", {})}
        inputs, widgets = [], []
        for name, spec in specs.items():
            value = node.inputs.get(name)
            if isinstance(value, tuple):  # a link from another node's output
                links.append([len(links) + 1, ids[value[0]], value[1], ids[node.key], len(inputs), spec[0]])
                inputs.append({"name": name, "type": spec[0], "link": len(links)})
            elif is_widget(spec):
                widgets += [value if name in node.inputs else spec[1].get("default"), *saved_extras(spec)]
            else:
                inputs.append({"name": name, "type": spec[0], "link": None})
        column = columns[node.key]
        width, extra_height = EXTRA_SPACE.get(node.class_type, (340, 0))
        height = 46 + 24 * (len(inputs) + len(widgets) + max(len(info["output"]), 1)) + extra_height
        y = heights.get(column, 300)
        heights[column] = y + height + 40
        x = 40 + sum(column_widths.get(c, 340) + 40 for c in range(column))
        properties = {"Node name for S&R": node.class_type}
        models = [{"name": value, "url": MODEL_FILES[value][1], "directory": MODEL_FILES[value][0]}
                  for value in widgets if isinstance(value, str) and value in MODEL_FILES]
        if models:
            properties["models"] = models
        ui_nodes.append({"id": ids[node.key], "type": node.class_type, "pos": [x, y],
                         "size": [width, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
                         "outputs": [{"name": name, "type": kind, "slot_index": slot, "links": []}
                                     for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))],
                         "properties": properties, "widgets_values": widgets})
    # a node's outputs can feed nodes listed after it: fill them once every link exists
    for ui_node in ui_nodes:
        for slot, output in enumerate(ui_node["outputs"]):
            output["links"] = [l[0] for l in links if l[1] == ui_node["id"] and l[2] == slot]
    return {"last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def build(object_info):
    return {name: ui_workflow(note, nodes, object_info) for name, (note, nodes) in WORKFLOWS.items()}


def problems(workflow, object_info):
    """How a UI-format workflow as ui_workflow writes it does not fit a runtime's node definitions, [] when it
    fits: every node type, socket, output and link it uses exists there with its type, and its widget values are
    as many, and of the types, as the widgets the editor assigns them to by position. (Whether a value is one a
    combo offers depends on the files installed: running the workflow checks that.)"""
    found = []
    for node in workflow["nodes"]:
        if node["type"] != "Note":
            info = object_info.get(node["type"])
            where = f"node {node['id']} {node['type']}"
            found += [f"{where}: {problem}" for problem in _node_problems(node, info)] if info else [f"{where}: no such node type"]
    return found + _link_problems(workflow)


def _node_problems(node, info):
    found = []
    specs = {**info["input"]["required"], **info["input"].get("optional", {})}
    sockets = {socket["name"]: socket["type"] for socket in node["inputs"]}
    found += [f"input {name} {kind} is {specs[name][0] if name in specs else 'missing'}"
              for name, kind in sockets.items() if name not in specs or specs[name][0] != kind]
    found += [f"required input {name} is missing" for name, spec in info["input"]["required"].items()
              if not is_widget(spec) and name not in sockets]
    outputs = list(zip(info["output_name"], info["output"]))
    found += [f"output {slot} {output['name']} {output['type']} is {outputs[slot] if slot < len(outputs) else 'missing'}"
              for slot, output in enumerate(node["outputs"]) if outputs[slot:slot + 1] != [(output["name"], output["type"])]]
    kinds = [kind for name, spec in specs.items() if is_widget(spec) and name not in sockets
             for kind in ["COMBO" if isinstance(spec[0], list) else spec[0]] + [None] * len(saved_extras(spec))]
    values = node["widgets_values"]
    if len(values) != len(kinds) or not all(map(_fits, values, kinds)):
        found.append(f"widget values {values} do not fit widgets {kinds}")
    return found


def _fits(value, kind):
    """Whether a saved widget value has the widget's type (None: an extra value, any)."""
    return kind is None or (isinstance(value, WIDGET_TYPES[kind]) and (kind == "BOOLEAN") == isinstance(value, bool))


def _link_problems(workflow):
    by_id = {node["id"]: node for node in workflow["nodes"]}

    def slot(node_id, side, index):
        slots = by_id.get(node_id, {}).get(side, [])
        return slots[index] if 0 <= index < len(slots) else {}

    found = []
    for link_id, source, source_slot, target, target_slot, kind in workflow["links"]:
        output, socket = slot(source, "outputs", source_slot), slot(target, "inputs", target_slot)
        if not (output.get("type") == socket.get("type") == kind and link_id in output.get("links", ())
                and socket.get("link") == link_id):
            found.append(f"link {link_id}: {source}.{source_slot} -> {target}.{target_slot} ({kind}) does not match the nodes' sockets")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_workflows"))
    args = parser.parse_args(argv)
    with urllib.request.urlopen(f"{args.url.rstrip('/')}/object_info", timeout=60) as response:
        object_info = json.load(response)
    os.makedirs(args.out, exist_ok=True)
    for name, workflow in build(object_info).items():
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(workflow, f, indent=1)
            f.write("\n")
        print(f"wrote {name}.json")


if __name__ == "__main__":
    main()
