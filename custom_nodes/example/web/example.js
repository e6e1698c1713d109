// Editor extension of Loom's example pack: draws the text an ExampleShowText node received
// (its `executed` ui output, {"text": [...]}) under the node. Served from
// /extensions/example/example.js and imported by the editor (docs/editor.md, "Extension hook API").
const app = window.loomApp || window.app;

app.registerExtension({
  name: "loom.example.showText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "ExampleShowText") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.call(this, output);
      this.exampleText = (output?.text || []).join("\n");
      this.setDirtyCanvas?.(true, true);
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.call(this, ctx);
      if (!this.exampleText || this.flags?.collapsed) return;
      ctx.save();
      ctx.fillStyle = "#ddd";
      ctx.font = "12px sans-serif";
      const lines = this.exampleText.split("\n").slice(0, 8);
      lines.forEach((line, i) => {
        ctx.fillText(line.slice(0, 60), 10, this.size[1] - 6 - 14 * (lines.length - 1 - i));
      });
      ctx.restore();
    };
  },
});
