"""Unit-length CLIP embeddings of images and texts from a local transformers CLIP folder (e.g. a copy of
openai/clip-vit-large-patch14: config, weights, tokenizer and preprocessor files; nothing is downloaded).
The data builder scores its pairs with them; the quality harness its text alignment, CLIP style similarity
and aesthetic score."""
import torch
from PIL import Image


class ClipEmbeddings:
    def __init__(self, folder, device="cpu"):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)

    @torch.no_grad()
    def images(self, images):
        """[N, D] for N PIL images."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.model.device)
        return unit(self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output))

    def image_files(self, paths, batch_size=16):
        """[N, D] for N image files, read `batch_size` at a time."""
        return torch.cat([self.images([read_rgb(path) for path in paths[start:start + batch_size]])
                          for start in range(0, len(paths), batch_size)])

    @torch.no_grad()
    def texts(self, texts):
        """[M, D] for M texts."""
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True).to(self.model.device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        return unit(self.model.text_projection(pooled))


def read_rgb(path):
    with Image.open(path) as image:
        return image.convert("RGB")


def unit(x):
    return torch.nn.functional.normalize(x.float(), dim=-1)
