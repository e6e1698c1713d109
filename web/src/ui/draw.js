/**
 * Per-node overlays painted after litegraph draws a node: bypass and mute
 * styling, the executing highlight and progress bar, error outlines with
 * their messages and offending inputs, and output or preview images.
 * Everything is read from app state; nothing here changes the document.
 */

import { LGraphCanvas, LiteGraph } from '@comfyorg/litegraph';
import { wrapText } from './widgets.js';

const BYPASS_BG = '#6a2a8a';
const ERROR = '#e33';
const RUNNING = '#3c3';

function contentTop(node) {
  let y = (Math.max(node.inputs?.length ?? 0, node.outputs?.length ?? 0)) * LiteGraph.NODE_SLOT_HEIGHT + 8;
  for (const w of node.widgets ?? []) {
    if (w.hidden) continue;
    const h = w.computeSize ? w.computeSize(node.size[0])[1] : LiteGraph.NODE_WIDGET_HEIGHT;
    y = Math.max(y, (w.last_y ?? y) + h + 4);
  }
  return y;
}

function drawImages(node, ctx, images) {
  const top = contentTop(node);
  const w = node.size[0] - 10;
  const h = node.size[1] - top - 5;
  const img = images.find((i) => i.complete && i.naturalWidth);
  if (!img || h < 20) return;
  const s = Math.min(w / img.naturalWidth, h / img.naturalHeight);
  const dw = img.naturalWidth * s;
  const dh = img.naturalHeight * s;
  ctx.drawImage(img, 5 + (w - dw) / 2, top + (h - dh) / 2, dw, dh);
  if (images.length > 1) {
    ctx.fillStyle = '#fff';
    ctx.fillText(`1 / ${images.length}`, 10, top + 14);
  }
}

function outline(ctx, node, color, width) {
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const h = node.flags?.collapsed ? title : node.size[1] + title;
  const wd = node.flags?.collapsed ? (node._collapsed_width ?? 100) : node.size[0];
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  ctx.roundRect(-4, -title - 4, wd + 8, h + 8, 10);
  ctx.stroke();
}

function drawErrors(app, node, ctx, mark) {
  outline(ctx, node, ERROR, 3);
  if (node.flags?.collapsed) return;
  for (const name of mark.inputs) {
    const slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
    if (slot >= 0) {
      const pos = node.getConnectionPos(true, slot);
      ctx.fillStyle = ERROR;
      ctx.beginPath();
      ctx.arc(pos[0] - node.pos[0], pos[1] - node.pos[1], 7, 0, Math.PI * 2);
      ctx.fill();
    }
    const w = node.widgets?.find((x) => x.name === name && !x.hidden);
    if (w?.last_y !== undefined) {
      ctx.strokeStyle = ERROR;
      ctx.lineWidth = 2;
      ctx.strokeRect(12, w.last_y, node.size[0] - 24, LiteGraph.NODE_WIDGET_HEIGHT);
    }
  }
  ctx.font = '12px sans-serif';
  const lines = mark.messages.flatMap((m) => wrapText(ctx, m, Math.max(node.size[0], 200) - 8));
  ctx.fillStyle = 'rgba(80,0,0,0.9)';
  ctx.fillRect(0, node.size[1] + 6, Math.max(node.size[0], 200), lines.length * 15 + 8);
  ctx.fillStyle = '#fdd';
  lines.forEach((l, i) => ctx.fillText(l, 4, node.size[1] + 20 + i * 15));
}

function drawProgress(app, node, ctx) {
  const p = app.exec.nodeProgress[String(node.id)];
  if (!p || !p.max) return;
  ctx.fillStyle = RUNNING;
  ctx.fillRect(0, -LiteGraph.NODE_TITLE_HEIGHT - 2, node.size[0] * (p.value / p.max), 4);
}

// Below this zoom litegraph draws nodes in low quality, without readable titles.
const OVERVIEW_SCALE = 0.6;
const OVERVIEW_TITLE_PX = 14;

/** At overview zoom, the node's title in a font that stays ~14 px on screen, on a dark band above the node. */
function drawOverviewTitle(app, node, ctx) {
  const scale = app.canvas.ds.scale;
  if (scale >= OVERVIEW_SCALE || !node.title) return;
  const size = Math.min(OVERVIEW_TITLE_PX / scale, 64);
  ctx.font = `bold ${size}px sans-serif`;
  const width = Math.min(ctx.measureText(node.title).width + size * 0.6, Math.max(node.size[0], size * 4));
  const y = -LiteGraph.NODE_TITLE_HEIGHT - size * 0.3;
  ctx.fillStyle = '#000c';
  ctx.fillRect(0, y - size, width, size * 1.3);
  ctx.fillStyle = '#fff';
  ctx.fillText(node.title, size * 0.3, y, width - size * 0.6);
}

function overlays(app, node, ctx) {
  const id = String(node.id);
  drawOverviewTitle(app, node, ctx);
  if (app.exec.node === id) outline(ctx, node, RUNNING, 3);
  drawProgress(app, node, ctx);
  const mark = app.marks.nodes[id];
  if (mark) drawErrors(app, node, ctx, mark);
  if (node.flags?.collapsed) return;
  const images = app.exec.node === id && app.exec.preview ? [app.exec.preview] : node.imgs;
  if (images?.length) drawImages(node, ctx, images);
}

/** Wrap the canvas's drawNode to paint Loom's overlays. */
export function installNodeDrawing(app) {
  const original = LGraphCanvas.prototype.drawNode;
  LGraphCanvas.prototype.drawNode = function drawNode(node, ctx) {
    const saved = [node.bgcolor, this.editor_alpha];
    if (node.mode === 4) node.bgcolor = BYPASS_BG;
    if (node.mode === 2) this.editor_alpha = 0.4;
    try {
      original.call(this, node, ctx);
      ctx.save();
      overlays(app, node, ctx);
      ctx.restore();
    } finally {
      [node.bgcolor, this.editor_alpha] = saved;
    }
  };
}
