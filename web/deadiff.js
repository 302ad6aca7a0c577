// ComfyUI-DEADiff front-end: a layer map on DEADiff Apply (Advanced) and what the loader and
// encoder did, shown on their nodes after a run.
//
// The layer map draws the 16 cross-attention layers of the SD1.5 UNet as a U (down blocks on
// the left, the middle block at the bottom, up blocks on the right; rows by resolution at
// 512 px), coloured by the DEADiff branch that feeds them. It edits the `layer_weights` text
// widget, which stays the saved value: a workflow keeps working without this extension, and
// whatever the text holds (a preset or 16 numbers) is what the map shows. The layer table and the
// presets come with DEADiff Apply (Advanced)'s definition (its layer_weights options), so nothing here
// mirrors Python's tables.
import { app } from "../../scripts/app.js";

let LAYERS = [];                              // [{index, block, stage, resolution, branch}], down to up
let PRESETS = {};                             // preset name -> 16 weights
const ROWS = [64, 32, 16, 8];                 // latent resolution at 512 px, top to bottom
const CLICK_STEPS = [0, 0.5, 1, 1.5, 2];
const DRAG_MAX = 2;
const DRAG_PER_UNIT = 0.02;                   // weight per graph unit dragged (100 px at zoom 1 = 2.0)
const SNAP = 0.05;
const BRANCH_COLORS = { style: "#e07b39", content: "#3f8fd8" };
const MAP_HEIGHT = 142;
const MIN_NODE_WIDTH = 460;
const INFO_FONT = "11px sans-serif";
const INFO_LINE = 14;

// ------------------------------------------------------------------ the text format (as Python)

/** A preset name or 16 comma/space-separated numbers -> {weights, preset, error}, like
 * deadiff_core/layer_weights.py parse_layer_weights. */
function parseLayerWeights(text) {
  const trimmed = String(text ?? "").trim();
  const key = trimmed.toLowerCase();
  if (Object.prototype.hasOwnProperty.call(PRESETS, key)) {
    return { weights: PRESETS[key].slice(), preset: key, error: null };
  }
  const parts = trimmed.replaceAll(",", " ").split(/\s+/).filter(Boolean);
  const number = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
  if (!parts.every((p) => number.test(p))) {
    return { weights: null, preset: null, error: `write ${LAYERS.length} numbers or a preset` };
  }
  const weights = parts.map(Number);
  if (weights.length !== LAYERS.length) {
    return { weights: null, preset: null, error: `needs ${LAYERS.length} numbers, got ${weights.length}` };
  }
  if (!weights.every((w) => Number.isFinite(w) && w >= 0)) {
    return { weights: null, preset: null, error: "numbers must be finite and >= 0" };
  }
  return { weights, preset: null, error: null };
}

/** The preset whose numbers these are, or null. */
function matchingPreset(weights) {
  return Object.keys(PRESETS).find((name) => PRESETS[name].every((w, i) => w === weights[i])) ?? null;
}

/** 16 numbers -> "1, 0.5, ..." (Python's `{w:g}` for the values the map produces). */
function formatWeights(weights) {
  return weights.map((w) => String(Number(Number(w).toPrecision(6)))).join(", ");
}

/** The next click step above `value`, wrapping from the top back to 0. */
function nextStep(value) {
  return CLICK_STEPS.find((s) => s > value + 1e-9) ?? CLICK_STEPS[0];
}

function dragValue(start, units) {
  const v = Math.min(DRAG_MAX, Math.max(0, start + units * DRAG_PER_UNIT));
  return Math.round(v / SNAP) * SNAP;
}

function shortLabel(w) {
  const rounded = Math.round(w * 100) / 100;
  const text = String(rounded);
  return text.startsWith("0.") ? text.slice(1) : text;
}

// ------------------------------------------------------------------ layer map widget

function mapGeometry(width) {
  const x0 = 15;
  const x1 = Math.max(x0 + 100, width - 15);
  const gridLeft = x0 + 8 + 28;
  const gridRight = x1 - 8;
  return {
    x0, x1, gridLeft, gridRight,
    colW: (gridRight - gridLeft) / LAYERS.length,
    headerY: 12, gridTop: 24, rowH: 24, footerY: 132,
  };
}

/** A layer's cell relative to the widget's top-left: [x, y, w, h]. */
function cellRect(g, index) {
  const row = ROWS.indexOf(LAYERS[index].resolution);
  return [g.gridLeft + index * g.colW + 1.5, g.gridTop + row * g.rowH + 2, g.colW - 3, g.rowH - 4];
}

function layerWeightsInput(node) {
  return node.inputs?.find((input) => input.widget?.name === "layer_weights");
}

function createLayerMap(node, textWidget) {
  const state = { y: 0, width: node.size[0], active: -1 };

  const linked = () => layerWeightsInput(node)?.link != null;

  function setText(text, canvas, e) {
    if (textWidget.value === text) return;
    canvas = canvas ?? app.canvas;
    if (typeof textWidget.setValue === "function" && canvas) {
      textWidget.setValue(text, { e, node, canvas });   // runs callbacks, marks the graph changed
    } else {
      textWidget.value = text;
      textWidget.callback?.(text, canvas, node);
      if (node.graph) node.graph._version++;
    }
    widget.triggerDraw?.();
    node.setDirtyCanvas?.(true, true);
  }

  const widget = {
    type: "deadiff_layer_map",
    name: "layer_map",
    value: "",                        // never saved: the layer_weights text is the saved value
    serialize: false,
    options: { serialize: false },
    tooltip: "DEADiff cross-attention layers (down | middle | up; rows 64² to 8²). Orange: style layers, "
      + "blue: content layers. Click a column to cycle its weight 0 → 0.5 → 1 → 1.5 → 2, drag up or "
      + "down to set it. Saved as the layer_weights text.",

    /** What the map shows: the parsed layer_weights text. */
    parsed() {
      return parseLayerWeights(textWidget.value);
    },

    /** Set one layer's weight through the text widget (presets expand to their 16 numbers). */
    setLayerWeight(index, value, canvas, e) {
      const weights = parseLayerWeights(textWidget.value).weights ?? new Array(LAYERS.length).fill(1);
      weights[index] = value;
      setText(formatWeights(weights), canvas, e);
    },

    /** A layer's cell as drawn last, [x, y, w, h] in the coordinates draw() was given: the node's
     * (classic canvas) or the widget's own canvas (Nodes 2.0). For tests and tools. */
    cellBoundsInWidget(index) {
      const [x, y, w, h] = cellRect(mapGeometry(state.width), index);
      return [x, state.y + y, w, h];
    },

    /** The same in graph coordinates (classic canvas). */
    cellBounds(index) {
      const [x, y, w, h] = widget.cellBoundsInWidget(index);
      return [node.pos[0] + x, node.pos[1] + y, w, h];
    },

    columnAt(x, y) {
      const g = mapGeometry(state.width);
      if (y < g.gridTop || y > g.gridTop + ROWS.length * g.rowH || x < g.gridLeft || x >= g.gridRight) return -1;
      return Math.floor((x - g.gridLeft) / g.colW);
    },

    computeSize(width) {
      return [width ?? node.size[0], MAP_HEIGHT];
    },

    draw(ctx, node, width, y) {
      state.y = y;
      state.width = width;
      const LG = window.LiteGraph ?? {};
      const g = mapGeometry(width);
      const { weights, preset, error } = parseLayerWeights(textWidget.value);
      const fromLink = linked();
      const text = LG.WIDGET_TEXT_COLOR ?? "#ddd";
      const dim = LG.WIDGET_SECONDARY_TEXT_COLOR ?? "#999";

      ctx.save();
      ctx.translate(0, y);
      ctx.beginPath();
      ctx.roundRect(g.x0, 0, g.x1 - g.x0, MAP_HEIGHT, 6);
      ctx.fillStyle = LG.WIDGET_BGCOLOR ?? "#222";
      ctx.fill();
      ctx.strokeStyle = LG.WIDGET_OUTLINE_COLOR ?? "#666";
      ctx.lineWidth = 1;
      ctx.stroke();

      // header: legend left, state right
      ctx.font = "11px sans-serif";
      ctx.textBaseline = "middle";
      ctx.textAlign = "left";
      let lx = g.x0 + 10;
      for (const branch of ["style", "content"]) {
        ctx.fillStyle = BRANCH_COLORS[branch];
        ctx.fillRect(lx, g.headerY - 4, 8, 8);
        ctx.fillStyle = text;
        const label = `${branch} (${LAYERS.filter((l) => l.branch === branch).length})`;
        ctx.fillText(label, lx + 12, g.headerY);
        lx += 12 + ctx.measureText(label).width + 12;
      }
      ctx.textAlign = "right";
      ctx.fillStyle = error && !fromLink ? "#e05555" : dim;
      const status = fromLink ? "set by the linked input" : error ? `⚠ ${error}` : preset ? `preset: ${preset}`
        : matchingPreset(weights) ? `= ${matchingPreset(weights)}` : "custom";
      ctx.fillText(status, g.x1 - 8, g.headerY, Math.max(40, g.x1 - 8 - lx));

      // resolution rows
      ctx.textAlign = "left";
      ctx.fillStyle = dim;
      ROWS.forEach((res, row) => ctx.fillText(`${res}²`, g.x0 + 8, g.gridTop + row * g.rowH + g.rowH / 2));

      // the UNet path through the layers, in execution order
      ctx.beginPath();
      LAYERS.forEach((_, i) => {
        const [cx, cy, cw, ch] = cellRect(g, i);
        if (i === 0) ctx.moveTo(cx + cw / 2, cy + ch / 2);
        else ctx.lineTo(cx + cw / 2, cy + ch / 2);
      });
      ctx.strokeStyle = "rgba(160,160,160,0.45)";
      ctx.lineWidth = 1.5;
      ctx.stroke();

      // cells: a bar per layer, full at DRAG_MAX
      ctx.textAlign = "center";
      ctx.font = g.colW < 22 ? "9px sans-serif" : "10px sans-serif";
      LAYERS.forEach((layer, i) => {
        const [cx, cy, cw, ch] = cellRect(g, i);
        const color = BRANCH_COLORS[layer.branch];
        ctx.fillStyle = "#151515";
        ctx.fillRect(cx, cy, cw, ch);
        const w = weights?.[i];
        if (w != null && !fromLink) {
          const fill = (Math.min(w, DRAG_MAX) / DRAG_MAX) * ch;
          ctx.globalAlpha = 0.85;
          ctx.fillStyle = color;
          ctx.fillRect(cx, cy + ch - fill, cw, fill);
          ctx.globalAlpha = 1;
        }
        ctx.strokeStyle = i === state.active ? "#ffffff" : color;
        ctx.lineWidth = i === state.active ? 2 : 1;
        ctx.strokeRect(cx + 0.5, cy + 0.5, cw - 1, ch - 1);
        ctx.fillStyle = w === 0 ? dim : "#ffffff";
        ctx.fillText(w == null || fromLink ? "?" : shortLabel(w), cx + cw / 2, cy + ch / 2 + 0.5, cw);
      });

      // stages under the grid
      ctx.fillStyle = dim;
      ctx.font = "10px sans-serif";
      const stageCentre = (first, last) => (cellRect(g, first)[0] + cellRect(g, last)[0] + cellRect(g, last)[2]) / 2;
      ctx.fillText("down", stageCentre(0, 5), g.footerY);
      ctx.fillText("mid", stageCentre(6, 6), g.footerY);
      ctx.fillText("up", stageCentre(7, 15), g.footerY);
      ctx.restore();
    },

    onPointerDown(pointer, node, canvas) {
      if (linked()) return false;
      const [gx, gy] = canvas.graph_mouse;
      const index = widget.columnAt(gx - node.pos[0], gy - node.pos[1] - state.y);
      if (index < 0) return false;
      const start = parseLayerWeights(textWidget.value).weights?.[index] ?? 1;
      state.active = index;
      const redraw = () => {
        widget.triggerDraw?.();                // Nodes 2.0 draws this widget on a canvas of its own
        node.setDirtyCanvas?.(true, true);
      };
      const done = () => {
        state.active = -1;
        redraw();
      };
      pointer.onClick = (e) => {
        widget.setLayerWeight(index, nextStep(start), canvas, e);
        done();
      };
      pointer.onDoubleClick = pointer.onClick;   // a quick second click cycles once more
      pointer.onDrag = (e) => {
        if (!pointer.dragStarted) return;
        widget.setLayerWeight(index, dragValue(start, gy - canvas.graph_mouse[1]), canvas, e);
      };
      pointer.onDragEnd = done;
      redraw();
      return true;
    },
  };

  // the text changes elsewhere (typed, pasted, loaded): redraw where the map has its own canvas
  const callback = textWidget.callback;
  textWidget.callback = function () {
    const result = callback?.apply(this, arguments);
    widget.triggerDraw?.();
    return result;
  };
  return widget;
}

function addLayerMap(node) {
  const textWidget = node.widgets?.find((w) => w.name === "layer_weights");
  if (!textWidget || node.widgets.some((w) => w.name === "layer_map")) return;
  // Appended last on purpose: LiteGraph saves widgets_values by widget position, so an unsaved
  // widget between saved ones would shift every value after it.
  node.addCustomWidget(createLayerMap(node, textWidget));
  fitWidth(node);
  const onConfigure = node.onConfigure;
  node.onConfigure = function () {
    const result = onConfigure?.apply(this, arguments);
    fitWidth(this);
    return result;
  };
}

function fitWidth(node) {
  const [w, h] = node.computeSize();
  node.setSize([Math.max(node.size[0], w, MIN_NODE_WIDTH), Math.max(node.size[1], h)]);
}

// ------------------------------------------------------------------ "what it did" on the loader and encoder

let measureContext;
function wrapText(text, width) {
  measureContext ??= document.createElement("canvas").getContext("2d");
  measureContext.font = INFO_FONT;
  const max = Math.max(60, width - 40);
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (line && measureContext.measureText(candidate).width > max) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

function createInfoWidget(node) {
  const widget = {
    type: "deadiff_info",
    name: "deadiff_info",
    value: "",                        // shown, never saved
    serialize: false,
    options: { serialize: false },
    computeSize(width) {
      return [width ?? node.size[0], wrapText(widget.value, width ?? node.size[0]).length * INFO_LINE + 8];
    },
    draw(ctx, node, width, y) {
      const LG = window.LiteGraph ?? {};
      ctx.save();
      ctx.font = INFO_FONT;
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillStyle = LG.WIDGET_SECONDARY_TEXT_COLOR ?? "#aaa";
      wrapText(widget.value, width).forEach((line, i) => ctx.fillText(line, 20, y + 4 + i * INFO_LINE));
      ctx.restore();
    },
  };
  return widget;
}

function showInfo(node, message) {
  const lines = message?.deadiff_info;
  if (!Array.isArray(lines) || !lines.length) return;
  let widget = node.widgets?.find((w) => w.name === "deadiff_info");
  if (!widget) widget = node.addCustomWidget(createInfoWidget(node));
  widget.value = lines.join("\n");
  widget.triggerDraw?.();
  fitHeight(node);
}

function fitHeight(node) {
  const [, h] = node.computeSize();
  if (h > node.size[1]) node.setSize([node.size[0], h]);
  node.setDirtyCanvas?.(true, true);
}

// ------------------------------------------------------------------ registration

app.registerExtension({
  name: "DEADiff.UI",
  nodeCreated(node) {
    if (node.comfyClass === "DEADiffApplyAdvanced") addLayerMap(node);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "DEADiffApplyAdvanced") {
      const options = nodeData.input?.required?.layer_weights?.[1] ?? {};
      LAYERS = options.deadiff_layers ?? [];
      PRESETS = options.deadiff_presets ?? {};
      return;
    }
    if (nodeData.name !== "DEADiffLoader" && nodeData.name !== "DEADiffEncode") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      showInfo(this, message);
      return result;
    };
  },
});
