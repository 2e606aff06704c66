// Latent Lab frontend: shows the text our nodes return (stats, reports, verdicts) on the node itself.
// Drawn on the canvas rather than kept in a widget, so it never enters a saved workflow's widgets_values.
import { app } from "../../scripts/app.js";

const LINE_HEIGHT = 14;
const MAX_LINES = 24;
const PADDING = 6;

function textLines(message) {
  const text = (message?.text ?? []).join("\n");
  const lines = text.split("\n");
  return lines.length > MAX_LINES ? [...lines.slice(0, MAX_LINES - 1), `… ${lines.length - MAX_LINES + 1} more lines`] : lines;
}

function textTop(node) {
  const widgetsBottom = node.widgets?.length
    ? Math.max(...node.widgets.map((w) => (w.last_y ?? 0) + (w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT)))
    : 0;
  return Math.max(widgetsBottom, (node.outputs?.length ?? 0) * LiteGraph.NODE_SLOT_HEIGHT) + PADDING;
}

app.registerExtension({
  name: "LatentLab.NodeText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("LatentLab")) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (!message?.text) return;
      this.latentLabLines = textLines(message);
      const needed = textTop(this) + this.latentLabLines.length * LINE_HEIGHT + PADDING;
      const imagesHeight = this.imgs?.length ? 200 : 0;
      this.setSize([Math.max(this.size[0], 360), Math.max(this.size[1], needed + imagesHeight)]);
      this.setDirtyCanvas(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (!this.latentLabLines || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px monospace";
      ctx.fillStyle = LiteGraph.NODE_TEXT_COLOR ?? "#ddd";
      let y = textTop(this) + LINE_HEIGHT;
      for (const line of this.latentLabLines) {
        ctx.fillText(line, PADDING, y, this.size[0] - 2 * PADDING);
        y += LINE_HEIGHT;
      }
      ctx.restore();
    };
  },
});
