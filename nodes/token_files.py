"""DEADiffSaveTokens / DEADiffLoadTokens: encode a reference once, reuse its tokens from a file.
Files stay inside ComfyUI's output (save) and input/output (load) folders."""
import os

import comfy.model_management
import folder_paths
import torch

from ..deadiff_core.token_io import load_tokens, save_tokens
from .errors import node_error
from .save_path import UnwritablePrefix, save_path, write_error

EXTENSION = ".safetensors"
OUTPUT = " [output]"
SAVE_NODE = "DEADiff Save Tokens"


def _token_files(base_dir):
    found = []
    for root, _, files in os.walk(base_dir, followlinks=True):
        found += [os.path.relpath(os.path.join(root, f), base_dir).replace(os.sep, "/") for f in files if f.endswith(EXTENSION)]
    return sorted(found)


def _resolve(name):
    """The file a list entry names, refusing anything that escapes its folder."""
    relative, base_dir = folder_paths.annotated_filepath(name)
    base_dir = os.path.realpath(base_dir or folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(base_dir, relative))
    if os.path.commonpath((base_dir, path)) != base_dir:
        raise ValueError(f"{name!r} lies outside ComfyUI's input/output folders")
    if not os.path.isfile(path):
        raise ValueError(f"{name!r} does not exist (any more)")
    return path


class DEADiffSaveTokens:
    SEARCH_ALIASES = ["deadiff", "save style", "save reference", "export tokens", "cache reference"]
    DESCRIPTION = "Saves reference tokens to ComfyUI's output folder, so a later workflow can skip the encoder."
    CATEGORY = "DEADiff"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "tokens": ("DEADIFF_TOKENS", {"tooltip": "From DEADiff Encode or Mix."}),
            "filename_prefix": ("STRING", {"default": "deadiff/tokens",
                                           "tooltip": "Path under the output folder; a counter and .safetensors are added."}),
        }}

    def save(self, tokens, filename_prefix):
        try:
            folder, filename, subfolder = save_path(filename_prefix, EXTENSION, SAVE_NODE)
        except UnwritablePrefix as e:
            raise node_error(None, e) from e
        path = os.path.join(folder, filename)
        try:
            save_tokens(path, tokens)
        except Exception as e:  # the OS refused after all: OSError, or safetensors' error wrapping one
            message = write_error(SAVE_NODE, path, e)
            if message is None:
                raise
            raise ValueError(message) from e
        saved = os.path.join(subfolder, filename).replace(os.sep, "/")
        return {"ui": {"deadiff_tokens": [{"filename": filename, "subfolder": subfolder, "type": "output",
                                           "load_as": saved + OUTPUT}]}}


class DEADiffLoadTokens:
    SEARCH_ALIASES = ["deadiff", "load style", "saved reference", "reuse reference", "import tokens"]
    DESCRIPTION = ("Loads reference tokens saved by DEADiff Save Tokens, from ComfyUI's input folder or (marked "
                   "[output]) its output folder.")
    CATEGORY = "DEADiff"
    RETURN_TYPES = ("DEADIFF_TOKENS",)
    OUTPUT_TOOLTIPS = ("The saved style and content tokens.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = _token_files(folder_paths.get_input_directory())
        files += [f + OUTPUT for f in _token_files(folder_paths.get_output_directory())]
        return {"required": {"tokens_file": (files, {"tooltip": "A .safetensors file written by DEADiff Save Tokens."})}}

    @classmethod
    def IS_CHANGED(cls, tokens_file):
        try:
            return os.path.getmtime(_resolve(tokens_file))
        except ValueError:
            return float("nan")  # never equal: the error is reported again

    def load(self, tokens_file):
        try:
            free = comfy.model_management.get_free_memory(torch.device("cpu"))
            return (load_tokens(_resolve(tokens_file), free_memory=free),)
        except ValueError as e:
            raise node_error("DEADiff Load Tokens", e) from e


NODE_CLASS_MAPPINGS = {"DEADiffSaveTokens": DEADiffSaveTokens, "DEADiffLoadTokens": DEADiffLoadTokens}
NODE_DISPLAY_NAME_MAPPINGS = {"DEADiffSaveTokens": "DEADiff Save Tokens", "DEADiffLoadTokens": "DEADiff Load Tokens"}
