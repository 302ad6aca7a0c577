"""The three kinds of training pairs from generated images (docs/DESIGN.md, Training): style pairs share the style
and differ in subject, content pairs share the subject and differ in style, reconstruction pairs
are an image with itself. References are drawn at random per target, or, given CLIP scores, the
best-scoring ones above a threshold."""
import os
import random
from collections import defaultdict

from ..seeds import derived_seed


def _choose(candidates, count, kind, target, seed, scores, min_score):
    if scores is None:
        rng = random.Random(derived_seed(seed, "pair", kind, target.file))
        return rng.sample(candidates, min(count, len(candidates)))
    ranked = sorted(candidates, key=lambda r: scores(kind, r, target), reverse=True)
    return [r for r in ranked[:count] if scores(kind, r, target) >= min_score]


def pair_rows(renders, output_dir, pairing, seed, scores=None, min_score=-1.0):
    """Manifest rows (absolute paths) for every render as a target."""
    by_style, by_subject = defaultdict(list), defaultdict(list)
    for render in renders:
        by_style[render.style].append(render)
        by_subject[render.subject].append(render)
    path = lambda render: os.path.join(output_dir, render.file)  # noqa: E731
    rows = []
    for target in renders:
        captions = {"style": pairing.style_caption, "content": pairing.content_caption}
        candidates = {"style": [r for r in by_style[target.style] if r.subject != target.subject],
                      "content": [r for r in by_subject[target.subject] if r.style != target.style]}
        for kind, pool in candidates.items():
            for reference in _choose(pool, pairing.per_target, kind, target, seed, scores, min_score):
                rows.append({"kind": kind, "reference": path(reference), "target": path(target),
                             "caption": captions[kind].format(subject=target.subject, style=target.style)})
        if pairing.recon:  # the trainer conditions reconstruction on "" whatever the caption says
            rows.append({"kind": "recon", "reference": path(target), "target": path(target), "caption": target.prompt})
    return rows
