"""DEADiffLoader: a DEADiff checkpoint or converted adapter -> DEADIFF."""
import comfy.model_management
import comfy.ops
import folder_paths

from ..deadiff_core.checkpoint import CheckpointError, load_adapter
from ..deadiff_core.comfy_adapter import ComfyDEADiff
from ..deadiff_core.layers import CONTENT, STYLE
from ..deadiff_core.precision import DTYPES
from . import model_folder
from .errors import node_error

model_folder.register()

# the `branches` choices -> load_adapter(branches=...); None loads every branch the file has
BRANCH_CHOICES = {"both": None, "style only": (STYLE,), "content only": (CONTENT,)}


class DEADiffLoader:
    SEARCH_ALIASES = ["deadiff", "load deadiff", "deadiff loader", "style adapter", "reference adapter",
                      "load style model", "qformer"]
    DESCRIPTION = ("Loads DEADiff's two Q-Former encoders (style and content) and its per-layer image projections "
                   "from models/deadiff: the official deadiff_v1.ckpt or an adapter converted from it.")
    CATEGORY = "DEADiff"
    RETURN_TYPES = ("DEADIFF",)
    OUTPUT_TOOLTIPS = ("The DEADiff adapter: connect it to DEADiff Encode and DEADiff Apply.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "deadiff_name": (model_folder.available(), {
                    "tooltip": "A file in models/deadiff: deadiff_v1.ckpt (7.43 GB, from the qth/DEADiff "
                               "Hugging Face repo) or a .safetensors made by `python -m deadiff_core.convert`."}),
            },
            "optional": {
                "dtype": (["auto", *DTYPES], {
                    "default": "auto",
                    "tooltip": "Precision the encoder weights are kept in; auto follows ComfyUI's choice for "
                               "text encoders on this device. Compute runs in the input's precision."}),
                "branches": (list(BRANCH_CHOICES), {
                    "default": "both",
                    "tooltip": "Load only one branch to save memory: 'style only' skips the content Q-Former and "
                               "the content layers' projections (then only mode 'style' works)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, deadiff_name=None):
        # Replaces ComfyUI's "Value not in list" for deadiff_name, so that a name the list leaves out (a link
        # that leads nowhere) is explained; None when the name comes from a link, checked again in load().
        problem = None if deadiff_name is None else model_folder.problem(deadiff_name)
        return True if problem is None else problem

    def load(self, deadiff_name, dtype="auto", branches="both"):
        problem = model_folder.problem(deadiff_name)
        if problem is not None:
            raise ValueError(f"DEADiff Loader: {problem}")
        path = folder_paths.get_full_path_or_raise(model_folder.FOLDER, deadiff_name)
        if dtype == "auto":
            weight_dtype = comfy.model_management.text_encoder_dtype(comfy.model_management.text_encoder_device())
        else:
            weight_dtype = DTYPES[dtype]
        try:
            adapter = load_adapter(path, dtype=weight_dtype, operations=comfy.ops.manual_cast,
                                   branches=BRANCH_CHOICES[branches])
        except CheckpointError as e:
            raise node_error("DEADiff Loader", e) from e
        info = f"{adapter.info.describe()}; weights kept in {str(weight_dtype).removeprefix('torch.')}"
        return {"ui": {"deadiff_info": [info]}, "result": (ComfyDEADiff(adapter),)}


NODE_CLASS_MAPPINGS = {"DEADiffLoader": DEADiffLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"DEADiffLoader": "Load DEADiff Model"}
