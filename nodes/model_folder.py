"""models/deadiff: where DEADiffLoader looks for checkpoints (extra_model_paths.yaml may add more)."""
import os

import folder_paths

FOLDER = "deadiff"
EXTENSIONS = {".ckpt", ".pt", ".pth", ".safetensors"}


def register():
    paths, extensions = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(extensions) | EXTENSIONS)
