// The SD1.5 cross-attention layer map and the layer-weight presets, mirrored from
// deadiff_core/layers.py (SD15_LAYERS) and deadiff_core/layer_weights.py (PRESETS).
// tests/test_frontend.py reads the two JSON literals below and checks them against Python,
// so keep each one valid JSON (double quotes, no trailing commas) between its markers.

// LAYERS-BEGIN
export const LAYERS = [
  {"index": 0, "block": "input_blocks.1.1", "stage": "down", "resolution": 64, "branch": "style"},
  {"index": 1, "block": "input_blocks.2.1", "stage": "down", "resolution": 64, "branch": "style"},
  {"index": 2, "block": "input_blocks.4.1", "stage": "down", "resolution": 32, "branch": "style"},
  {"index": 3, "block": "input_blocks.5.1", "stage": "down", "resolution": 32, "branch": "style"},
  {"index": 4, "block": "input_blocks.7.1", "stage": "down", "resolution": 16, "branch": "content"},
  {"index": 5, "block": "input_blocks.8.1", "stage": "down", "resolution": 16, "branch": "content"},
  {"index": 6, "block": "middle_block.1", "stage": "middle", "resolution": 8, "branch": "content"},
  {"index": 7, "block": "output_blocks.3.1", "stage": "up", "resolution": 16, "branch": "content"},
  {"index": 8, "block": "output_blocks.4.1", "stage": "up", "resolution": 16, "branch": "content"},
  {"index": 9, "block": "output_blocks.5.1", "stage": "up", "resolution": 16, "branch": "style"},
  {"index": 10, "block": "output_blocks.6.1", "stage": "up", "resolution": 32, "branch": "style"},
  {"index": 11, "block": "output_blocks.7.1", "stage": "up", "resolution": 32, "branch": "style"},
  {"index": 12, "block": "output_blocks.8.1", "stage": "up", "resolution": 32, "branch": "style"},
  {"index": 13, "block": "output_blocks.9.1", "stage": "up", "resolution": 64, "branch": "style"},
  {"index": 14, "block": "output_blocks.10.1", "stage": "up", "resolution": 64, "branch": "style"},
  {"index": 15, "block": "output_blocks.11.1", "stage": "up", "resolution": 64, "branch": "style"}
];
// LAYERS-END

// PRESETS-BEGIN
export const PRESETS = {
  "all": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  "style layers only": [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
  "content layers only": [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
  "down blocks only": [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  "up blocks only": [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  "fine layers only (64x64)": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
};
// PRESETS-END
