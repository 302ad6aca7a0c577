"""Pair scores from a local CLIP model (a Hugging Face folder such as openai/clip-vit-large-patch14):
a pair is as good as its *shared* attribute is visible in both images. A style pair scores the
lower of its two images' similarity to the style text; a content pair, to the subject text."""
import os

import torch
from PIL import Image


def _embedding(output):
    # transformers 5 returns a model output whose pooler_output is projected; 4.x the tensor itself
    return getattr(output, "pooler_output", output)


class ClipSimilarity:
    def __init__(self, path, device="cpu", batch_size=16):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def images(self, paths):
        """[N, D] unit image embeddings."""
        out = []
        for i in range(0, len(paths), self.batch_size):
            images = []
            for path in paths[i:i + self.batch_size]:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
            out.append(_embedding(self.model.get_image_features(pixel_values=pixels)))
        return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts):
        """[M, D] unit text embeddings."""
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True).to(self.device)
        features = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return torch.nn.functional.normalize(_embedding(features).float(), dim=-1)


class PairScores:
    """Scores of candidate pairs among generated images, from one pass of CLIP over images and texts."""

    def __init__(self, clip, renders, output_dir):
        images = clip.images([os.path.join(output_dir, r.file) for r in renders])
        subjects = sorted({r.subject for r in renders})
        styles = sorted({r.style for r in renders})
        texts = clip.texts([*subjects, *styles])
        to_subject = images @ texts[: len(subjects)].T
        to_style = images @ texts[len(subjects):].T
        self.subject_score = {r.file: to_subject[i, subjects.index(r.subject)].item() for i, r in enumerate(renders)}
        self.style_score = {r.file: to_style[i, styles.index(r.style)].item() for i, r in enumerate(renders)}

    def __call__(self, kind, reference, target):
        scores = self.style_score if kind == "style" else self.subject_score
        return min(scores[reference.file], scores[target.file])
