// Latent Lab frontend extension.
// - The text our nodes return (stats, reports, verdicts, sweep summaries) is shown on the node, in a widget of its
//   own placed above any images, so text and images never overlap.
// - The CFG Sweep Sampler shows, under its CFG list, the values the lists resolve to and the cell count, as you
//   type (same grammar as Python: js/lib/sweep_grammar.js, tested against tests/vectors/sweep_grammar.json).
// - "Open in Latent Explorer" on Save Latent and Load Latent nodes (a button) and on nodes whose LATENT goes to a
//   Save Latent node (right-click menu); also in the menu Extensions > Latent Lab.
// Every widget added here has serialize: false, so saved workflows and prompts are exactly as without it. One
// code path serves frontends 1.27 to 1.5x, classic and Nodes 2.0: features are detected, versions never read.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { shortList, sweepPreview } from "./lib/sweep_grammar.js";

const LINE_HEIGHT = 15;
const MAX_LINES = 24;
const PADDING = 6;
const SWEEP_NODE = "LatentLabCFGSweep";

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

/** Add a widget right after `after`. */
function insertWidgetAfter(node, widget, after) {
  node.addCustomWidget(widget);
  const added = node.widgets.pop();
  node.widgets.splice(node.widgets.indexOf(after) + 1, 0, added);
  return added;
}

/** Frontends that write widget values by widget index (1.27) leave a hole at every serialize: false widget, and
 * read the list back without those widgets: drop the holes. Newer frontends write a list without holes. */
function compactWidgetValues(data) {
  const values = data.widgets_values;
  if (Array.isArray(values) && Object.keys(values).length < values.length) data.widgets_values = values.filter(() => true);
}

/** Frontends that also save values by name (1.5x) restore by position; the names are the frontend's own record of
 * each widget, so restoring from them brings back graphs whose positional list was saved shifted. */
function restoreNamedValues(node, data) {
  const named = data?.widgets_values_named;
  if (!named || typeof named !== "object" || Array.isArray(named)) return;
  for (const widget of node.widgets ?? []) {
    if (widget.serialize !== false && Object.hasOwn(named, widget.name)) widget.value = named[widget.name];
  }
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
  return Math.min(Math.max(360, widest + 2 * PADDING + 24), 720);
}

/** Node text in a <pre> (a DOM widget): drawn the same in classic mode and under Nodes 2.0, selectable, and it
 * scrolls instead of cutting a line the node is too narrow for. */
function addTextBox(node) {
  const box = document.createElement("pre");
  box.className = "latentlab-text";
  Object.assign(box.style, {
    margin: "0", padding: `${PADDING / 2}px ${PADDING}px`, boxSizing: "border-box", width: "100%", height: "100%",
    overflow: "auto", whiteSpace: "pre", font: "12px/15px monospace", color: "var(--input-text, #ddd)",
    background: "var(--comfy-input-bg, #222)", borderRadius: "4px", userSelect: "text",
  });
  const height = () => Math.max(1, node.latentLabLines?.length ?? 1) * LINE_HEIGHT + PADDING + 4;
  const widget = node.addDOMWidget("latentlab_text", "latentlab_text", box,
    { serialize: false, hideOnZoom: false, getMinHeight: height, getMaxHeight: height, getHeight: height });
  widget.serialize = false;
  const index = node.widgets.indexOf(widget);
  const images = node.widgets.findIndex((w) => w.name === "$$canvas-image-preview");
  if (images >= 0 && images < index) node.widgets.splice(images, 0, ...node.widgets.splice(index, 1));
  return widget;
}

function showText(node, message) {
  node.latentLabLines = textLines(message);
  const widget = node.widgets?.find((w) => w.name === "latentlab_text") ?? addTextBox(node);
  widget.element.textContent = node.latentLabLines.join("\n");
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

export function sweepLines(cfgText, seedsText, seed, maxCells, guidanceText = "") {
  const result = sweepPreview(cfgText, seedsText, seed, maxCells, guidanceText);
  if (result.error) return [{ text: `✗ ${result.error.problem}`, ok: false }, { text: `  ${result.error.fix}`, ok: false }];
  const guidance = result.guidance ? ` × ${result.guidance.length} guidance: ${shortList(result.guidance, 8)}` : "";
  const cfg = `→ ${result.cfg.length} CFG: ${shortList(result.cfg, result.guidance ? 6 : 12)}${guidance}`;
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
  if (byName("guidance_values")) watchTyping(node, byName("guidance_values"));
  const lines = () => sweepLines(widgetText(node, cfgWidget), widgetText(node, byName("seeds")), byName("seed")?.value ?? 0,
    byName("max_cells")?.value ?? Infinity, widgetText(node, byName("guidance_values")));
  node.latentLabSweepLines = lines;
  insertWidgetAfter(node, textWidget("latentlab_sweep_preview", lines), cfgWidget);
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
  return (node.outputs ?? []).flatMap((output, slot) =>
    output.type === "LATENT" ? (node.getOutputNodes(slot) ?? []).filter((target) => target.type === "SaveLatent") : []);
}

function explorerMenuItems(node) {
  const latentFiles = node.type === "SaveLatent" || node.type === "LoadLatent";
  const targets = latentFiles ? [node] : saveLatentTargets(node);
  if (!targets.length) return [];
  const file = targets.map(savedFileOf).find(Boolean) ?? null;
  return [{ content: file ? `Open in Latent Explorer (${file.filename})` : "Open in Latent Explorer", callback: () => openExplorer(file) }];
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

  getNodeMenuItems(node) {
    return explorerMenuItems(node);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const ours = nodeData.name.startsWith("LatentLab");
    const latentFiles = nodeData.name === "SaveLatent" || nodeData.name === "LoadLatent";
    const latentOut = (nodeData.output ?? []).includes("LATENT");

    if (ours || latentFiles) {
      const onSerialize = nodeType.prototype.onSerialize;
      nodeType.prototype.onSerialize = function (data) {
        onSerialize?.apply(this, arguments);
        compactWidgetValues(data);
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function (data) {
        const result = onConfigure?.apply(this, arguments);
        restoreNamedValues(this, data);
        return result;
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

    // Frontends with the getNodeMenuItems hook (above) call it for every node; older ones get the menu patched.
    if ((latentFiles || latentOut) && typeof app.collectNodeMenuItems !== "function") {
      const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
      nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
        const result = getExtraMenuOptions?.apply(this, arguments);
        options.push(...explorerMenuItems(this));
        return result;
      };
    }
  },
});
