"""How a node reports what the core refused: the node's name, the core's facts, then what to do in ComfyUI.

Raised `from` the core's error, so the server log keeps the traceback of where it was refused."""
from ..deadiff_core.checkpoint import DiffusionCheckpoint, IPAdapterFile, TokensNotWeights, VisionTowersDiffer
from ..deadiff_core.comfy_patch import BranchNotLoaded
from ..deadiff_core.comfy_vision import NotViTL14

ADVICE = {
    BranchNotLoaded: "Set Load DEADiff Model's branches to 'both', or pick a mode the loaded branch serves.",
    NotViTL14: "Load CLIP ViT-L/14 in Load CLIP Vision (e.g. CLIP-ViT-L-14 / clip_vision_l.safetensors), or leave "
               "DEADiff Encode's clip_vision unconnected to use the DEADiff file's own vision tower.",
    VisionTowersDiffer: "Use an adapter converted without --with-vision (python -m deadiff_core.convert) and connect "
                        "Load CLIP Vision (CLIP ViT-L/14) to DEADiff Encode.",
    TokensNotWeights: "Put it in ComfyUI's input folder and load it with DEADiff Load Tokens.",
    IPAdapterFile: "Use it with an IP-Adapter node pack, and put deadiff_v1.ckpt into models/deadiff.",
    DiffusionCheckpoint: "Load it with Load Checkpoint, and put deadiff_v1.ckpt into models/deadiff.",
}


def node_error(node, error):
    """A ValueError for the editor: `node: <the core's message> <advice>`; raise it `from error`."""
    advice = next((text for kind, text in ADVICE.items() if isinstance(error, kind)), None)
    message = f"{node}: {error}" if node else str(error)
    return ValueError(f"{message} {advice}" if advice else message)
