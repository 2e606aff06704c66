// Latent Lab frontend extension.
// - The text our nodes return (stats, reports, verdicts, sweep summaries) is shown on the node, in a widget of its
//   own placed above any images, so text and images never overlap.
// - The CFG Sweep Sampler shows, under its CFG list, the values the lists resolve to and the cell count, as you
//   type (same grammar as Python: js/lib/sweep_grammar.js, tested against tests/vectors/sweep_grammar.json).
// - "Open in Latent Explorer" on Save Latent and Load Latent nodes (a button) and on nodes whose LATENT goes to a
//   Save Latent node (right-click menu); also in the menu Extensions > Latent Lab.
// Every widget added here has serialize: false, so saved workflows and prompts are exactly as without it.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { shortList, sweepPreview } from "./lib/sweep_grammar.js";

const LINE_HEIGHT = 15;
const MAX_LINES = 24;
const PADDING = 6;
const SWEEP_NODE = "LatentLabCFGSweep";
const PACK_MODULE = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2, -1)[0] ?? "");

// ------------------------------------------------------------------------------------------------ helpers

function textColor(ok = true) {
  return ok ? (LiteGraph.WIDGET_TEXT_COLOR ?? LiteGraph.NODE_TEXT_COLOR ?? "#ddd") : "#ff8a7a";
}

function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let low = 0, high = text.length;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (ctx.measureText(text.slice(0, middle) + "…").width <= width) low = middle;
    else high = middle - 1;
  }
  return text.slice(0, low) + "…";
}

/** A read-only text widget (serialize: false): fixed height from its line count, drawn in monospace. */
function textWidget(name, lines) {
  return {
    name,
    type: "latentlab_text",
    value: "",
    serialize: false,
    options: { serialize: false },
    lines,
    computeSize(width) {
      const count = typeof this.lines === "function" ? this.lines().length : this.lines.length;
      return [width ?? 200, Math.max(1, count) * LINE_HEIGHT + PADDING];
    },
    draw(ctx, node, width, y) {
      const rows = typeof this.lines === "function" ? this.lines() : this.lines;
      ctx.save();
      ctx.font = "12px monospace";
      ctx.textBaseline = "alphabetic";
      let line = y + LINE_HEIGHT;
      for (const row of rows) {
        const { text, ok = true } = typeof row === "string" ? { text: row } : row;
        ctx.fillStyle = textColor(ok);
        ctx.fillText(fitText(ctx, text, width - 2 * PADDING - 4), PADDING + 4, line);
        line += LINE_HEIGHT;
      }
      ctx.restore();
    },
  };
}

/** Add a widget right after `after` (or before any image preview when `after` is null). */
function insertWidget(node, widget, after = null) {
  node.addCustomWidget(widget);
  const added = node.widgets.pop();
  let index = after ? node.widgets.indexOf(after) + 1 : node.widgets.findIndex((w) => w.name === "$$canvas-image-preview");
  if (index < 0 && !after) index = node.widgets.length;
  node.widgets.splice(index, 0, added);
  return added;
}

/** Serialized widget values without holes: LiteGraph writes by widget index, but reads back skipping
 * serialize:false widgets, so a non-serialized widget in the middle must be dropped from the list. */
function compactWidgetValues(node, data) {
  if (!Array.isArray(data.widgets_values) || !node.widgets) return;
  data.widgets_values = node.widgets.flatMap((widget, i) => (widget.serialize === false ? [] : [data.widgets_values[i]]));
}

function explorerUrl(file) {
  const base = `${api.api_base ?? ""}/latentlab/`;
  if (!file) return base;
  const query = new URLSearchParams({ type: file.type ?? "output", subfolder: file.subfolder ?? "", filename: file.filename });
  return `${base}?${query}`;
}

function openExplorer(file) {
  window.open(explorerUrl(file), "_blank", "noopener");
}

// ------------------------------------------------------------------------------------------------ node text

function textLines(message) {
  const lines = (message?.text ?? []).join("\n").split("\n");
  return lines.length > MAX_LINES ? [...lines.slice(0, MAX_LINES - 1), `… ${lines.length - MAX_LINES + 1} more lines`] : lines;
}

let measurer = null;
function textWidth(lines) {
  measurer ??= document.createElement("canvas").getContext("2d");
  measurer.font = "12px monospace";
  const widest = Math.max(0, ...lines.map((line) => measurer.measureText(line).width));
  return Math.min(Math.max(360, widest + 2 * PADDING + 12), 720);
}

function showText(node, message) {
  node.latentLabLines = textLines(message);
  let widget = node.widgets?.find((w) => w.name === "latentlab_text");
  if (!widget) {
    widget = insertWidget(node, textWidget("latentlab_text", () => node.latentLabLines ?? []));
  }
  const width = Math.max(node.size[0], textWidth(node.latentLabLines));
  node.setSize([width, Math.max(node.size[1], node.computeSize([width, node.size[1]])[1])]);
  node.setDirtyCanvas(true, true);
}

// ------------------------------------------------------------------------------------------------ sweep preview

function widgetText(node, widget) {
  // While its edit box is open, the text being typed; otherwise the widget's value.
  const box = app.canvas?.prompt_box;
  if (box && node.latentLabEditing === widget?.name && box.isConnected) {
    const input = box.querySelector(".value");
    if (input) return input.value;
  }
  return widget?.value ?? "";
}

export function sweepLines(cfgText, seedsText, seed, maxCells) {
  const result = sweepPreview(cfgText, seedsText, seed, maxCells);
  if (result.error) return [{ text: `✗ ${result.error.problem}`, ok: false }, { text: `  ${result.error.fix}`, ok: false }];
  const cfg = `→ ${result.cfg.length} CFG: ${shortList(result.cfg)}`;
  const seeds = result.seeds ? `${result.seeds.length} seeds: ${shortList(result.seeds, 6)}` : `1 seed (${seed})`;
  const cells = `= ${result.cells} cell${result.cells === 1 ? "" : "s"}` + (result.tooMany ? ` > max_cells ${maxCells}: refused` : "");
  return [{ text: cfg }, { text: `× ${seeds} ${cells}`, ok: !result.tooMany }];
}

function watchTyping(node, widget) {
  const original = widget.onClick?.bind(widget);
  if (!original) return;
  widget.onClick = (options) => {
    node.latentLabEditing = widget.name;
    original(options);
    const input = app.canvas?.prompt_box?.querySelector(".value");
    input?.addEventListener("input", () => node.setDirtyCanvas(true, false));
  };
}

function addSweepPreview(node) {
  const byName = (name) => node.widgets?.find((w) => w.name === name);
  const cfgWidget = byName("cfg_values");
  if (!cfgWidget || byName("latentlab_sweep_preview")) return;
  watchTyping(node, cfgWidget);
  if (byName("seeds")) watchTyping(node, byName("seeds"));
  const lines = () => sweepLines(widgetText(node, cfgWidget), widgetText(node, byName("seeds")), byName("seed")?.value ?? 0,
    byName("max_cells")?.value ?? Infinity);
  node.latentLabSweepLines = lines;
  insertWidget(node, textWidget("latentlab_sweep_preview", lines), cfgWidget);
  node.setSize([Math.max(node.size[0], 340), node.computeSize()[1]]);
}

// ------------------------------------------------------------------------------------------------ Latent Explorer

function savedFileOf(node) {
  if (node.type === "SaveLatent") return node.latentLabSaved ?? null;
  if (node.type === "LoadLatent") {
    const name = node.widgets?.find((w) => w.name === "latent")?.value;
    if (!name) return null;
    const parts = String(name).replace(/ \[input\]$/, "").split("/");
    return { type: "input", filename: parts.pop(), subfolder: parts.join("/") };
  }
  return null;
}

function saveLatentTargets(node) {
  const found = [];
  for (const output of node.outputs ?? []) {
    if (output.type !== "LATENT") continue;
    for (const linkId of output.links ?? []) {
      const link = node.graph?.links?.get ? node.graph.links.get(linkId) : node.graph?.links?.[linkId];
      const target = link && node.graph.getNodeById(link.target_id);
      if (target?.type === "SaveLatent") found.push(target);
    }
  }
  return found;
}

function addExplorerButton(node) {
  if (node.widgets?.find((w) => w.name === "Open in Latent Explorer")) return;
  const button = node.addWidget("button", "Open in Latent Explorer", null, () => openExplorer(savedFileOf(node)));
  button.serialize = false;
  button.options = { ...(button.options ?? {}), serialize: false };
}

// ------------------------------------------------------------------------------------------------ extension

app.registerExtension({
  name: "LatentLab.Frontend",

  commands: [{ id: "LatentLab.OpenExplorer", label: "Open Latent Explorer", icon: "pi pi-images", function: () => openExplorer(null) }],
  menuCommands: [{ path: ["Extensions", "Latent Lab"], commands: ["LatentLab.OpenExplorer"] }],

  async setup() {
    // ComfyUI lists every .json in example_workflows/ as a template, index.json (our titles) included: hide it.
    const original = api.getWorkflowTemplates?.bind(api);
    if (original) {
      api.getWorkflowTemplates = async () => {
        const templates = await original();
        if (Array.isArray(templates?.[PACK_MODULE])) templates[PACK_MODULE] = templates[PACK_MODULE].filter((n) => n !== "index");
        return templates;
      };
    }
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const ours = nodeData.name.startsWith("LatentLab");
    const latentFiles = nodeData.name === "SaveLatent" || nodeData.name === "LoadLatent";
    const latentOut = (nodeData.output ?? []).includes("LATENT");

    if (ours || latentFiles) {
      const onSerialize = nodeType.prototype.onSerialize;
      nodeType.prototype.onSerialize = function (data) {
        onSerialize?.apply(this, arguments);
        compactWidgetValues(this, data);
      };
    }

    if (ours) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        if (message?.text) showText(this, message);
      };
    }

    if (nodeData.name === SWEEP_NODE) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        addSweepPreview(this);
        return result;
      };
    }

    if (latentFiles) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        addExplorerButton(this);
        return result;
      };
    }
    if (nodeData.name === "SaveLatent") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const saved = message?.latents?.[0];
        if (saved) this.latentLabSaved = saved;
      };
    }

    if (latentFiles || latentOut) {
      const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
      nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
        const result = getExtraMenuOptions?.apply(this, arguments);
        const targets = latentFiles ? [this] : saveLatentTargets(this);
        if (targets.length) {
          const file = targets.map(savedFileOf).find(Boolean) ?? null;
          options.push({ content: file ? `Open in Latent Explorer (${file.filename})` : "Open in Latent Explorer", callback: () => openExplorer(file) });
        }
        return result;
      };
    }
  },
});
