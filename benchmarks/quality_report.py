"""The quality harness's outputs: one CSV row per image, a summary table like the paper's Table 1 (mean per
method, for style and content references apart), and a contact sheet."""
import csv
import statistics

from PIL import Image, ImageDraw, ImageOps

from benchmarks.quality_metrics import COLUMNS

FIELDS = ["reference", "section", "prompt", "seed", "method", "mode", "weight", "image"]


def write_csv(path, rows, metrics):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS + metrics)
        writer.writeheader()
        writer.writerows(rows)


def summary(rows, metrics, methods):
    """Markdown: per reference kind, each method's mean of each metric over its images."""
    lines = []
    for section in dict.fromkeys(row["section"] for row in rows):
        in_section = [row for row in rows if row["section"] == section]
        references = len({row["reference"] for row in in_section})
        prompts = len({(row["prompt"], row["seed"]) for row in in_section})
        lines += [f"{section} references: {references} images x {prompts} prompts", "",
                  _table_row(["method", "images", *(COLUMNS[m] for m in metrics)]),
                  _table_row(["---"] * (2 + len(metrics)))]
        for method in methods:
            mine = [row for row in in_section if row["method"] == method]
            means = [f"{statistics.fmean(row[m] for row in mine):.3f}" for m in metrics]
            lines.append(_table_row([method, str(len(mine)), *means]))
        lines.append("")
    return "\n".join(lines)


def _table_row(cells):
    return "| " + " | ".join(cells) + " |"


def contact_sheet(path, rows, methods, thumb=160):
    """A grid: one row per (reference, prompt, seed), the reference then each method's image; labels on top."""
    cases = list(dict.fromkeys((row["reference_path"], row["prompt"], row["seed"]) for row in rows))
    images = {(row["reference_path"], row["prompt"], row["seed"], row["method"]): row["image_path"] for row in rows}
    label, caption = 16, 14
    row_height = caption + thumb
    sheet = Image.new("RGB", ((1 + len(methods)) * thumb, label + len(cases) * row_height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(["reference", *methods]):
        draw.text((column * thumb + 4, 2), _fitted(draw, title, thumb - 8), fill="black")
    for index, (reference, prompt, seed) in enumerate(cases):
        top = label + index * row_height
        draw.text((4, top + 1), _fitted(draw, f"{prompt}  (seed {seed})", sheet.width - 8), fill="black")
        paths = [reference] + [images.get((reference, prompt, seed, method)) for method in methods]
        for column, image_path in enumerate(paths):
            if image_path:
                with Image.open(image_path) as image:
                    tile = ImageOps.pad(image.convert("RGB"), (thumb, thumb), color="white")
                sheet.paste(tile, (column * thumb, top + caption))
    sheet.save(path)


def _fitted(draw, text, width):
    """The text, cut with an ellipsis where it would run past `width` pixels."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
