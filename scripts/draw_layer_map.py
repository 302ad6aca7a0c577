#!/usr/bin/env python3
"""Draws DEADiff's layer routing from deadiff_core/layers.py (the table the code uses), as the
picture the README and the help pages show, web/docs/layer_map.png, and the registry icon web/icon.png.

    python -m scripts.draw_layer_map [--out web/docs/layer_map.png] [--icon web/icon.png]
"""
import argparse
import os

from PIL import Image, ImageDraw, ImageFont

from deadiff_core.layers import SD15_LAYERS, STYLE

COLOURS = {STYLE: (232, 129, 48), "content": (52, 120, 200)}
RESOLUTION = {1: "64x64", 2: "32x32", 4: "16x16", 8: "8x8"}  # latent grid at 512 px
BOX_W, BOX_H, GAP = 150, 54, 10


def positions():
    """(column, row) per layer: down blocks on the left going down, middle at the bottom, up blocks rising."""
    down = [l for l in SD15_LAYERS if l.stage == "down"]
    up = [l for l in SD15_LAYERS if l.stage == "up"]
    rows = {64: 0, 32: 1, 16: 2, 8: 3}
    place = {}
    for layer in down:
        place[layer.index] = (down.index(layer) % 2, rows[layer.resolution_at_512px])
    for layer in up:
        place[layer.index] = (5 + up.index(layer) % 3, rows[layer.resolution_at_512px])
    place[next(l.index for l in SD15_LAYERS if l.stage == "middle")] = (3.5, 3)
    return place


def box(index):
    """The rectangle of layer `index` in the full picture."""
    column, row = positions()[index]
    x, y = 20 + column * (BOX_W + GAP), 50 + row * (BOX_H + 28)
    return x, y, x + BOX_W, y + BOX_H


def draw_map(path):
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=12)
    width, height = 8 * (BOX_W + GAP) + 90, 4 * (BOX_H + 28) + 130
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 12), "DEADiff routing over SD1.5's 16 cross-attention layers", fill="black", font=font)
    for row, scale in enumerate((1, 2, 4, 8)):
        draw.text((width - 66, 62 + row * (BOX_H + 28) + BOX_H // 2 - 8), RESOLUTION[scale], fill="gray", font=font)
    for layer in SD15_LAYERS:
        x, y, *_ = rectangle = box(layer.index)
        draw.rounded_rectangle(rectangle, radius=8, fill=COLOURS[layer.branch])
        kind, number = layer.patch_key
        draw.text((x + 8, y + 6), f"#{layer.index}  {kind} {number}", fill="white", font=font)
        draw.text((x + 8, y + 30), f"{layer.channels} ch, {layer.branch}", fill="white", font=small)
    legend_y = height - 60
    for i, (branch, colour) in enumerate(COLOURS.items()):
        x = 20 + i * 330
        draw.rounded_rectangle((x, legend_y, x + 24, legend_y + 24), radius=4, fill=colour)
        words = "style tokens (fine layers)" if branch == STYLE else "content tokens (coarse layers 4-8)"
        draw.text((x + 34, legend_y + 4), words, fill="black", font=font)
    draw.text((20, height - 26), "down blocks (left) -> middle -> up blocks (right); a branch that is off gets 16 zero tokens",
              fill="gray", font=small)
    image.save(path, optimize=True)


def draw_icon(path, size=128):
    """The same U of 16 squares, coloured by branch."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    cell = size / 9
    for layer in SD15_LAYERS:
        column, row = positions()[layer.index]
        x, y = cell * (column + 0.5), cell * (1.5 + row * 1.6)
        draw.rounded_rectangle((x, y, x + cell * 0.85, y + cell * 1.2), radius=2, fill=COLOURS[layer.branch])
    image.save(path, optimize=True)


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(root, "web", "docs", "layer_map.png"))
    parser.add_argument("--icon", default=os.path.join(root, "web", "icon.png"))
    args = parser.parse_args(argv)
    draw_map(args.out)
    draw_icon(args.icon)
    print(f"wrote {args.out} and {args.icon}")


if __name__ == "__main__":
    main()
