"""Pair scores from a local CLIP model (deadiff_core.clip_embeddings): a pair is as good as its *shared*
attribute is visible in both images. A style pair scores the lower of its two images' similarity to the
style text; a content pair, to the subject text."""
import os


class PairScores:
    """Scores of candidate pairs among generated images, from one pass of CLIP (a ClipEmbeddings) over images and
    texts."""

    def __init__(self, clip, renders, output_dir):
        images = clip.image_files([os.path.join(output_dir, r.file) for r in renders])
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
