/**
 * Drawing a MarkdownNote's text as formatted Markdown on the canvas (headings, lists, code,
 * bold and italic), wrapped to the node's width and clipped to its height; clicking it opens
 * the text editor on the source, as for a plain Note.
 */

import { markdownBlocks } from '../graph/markdown.js';
import { openTextEditor } from './texteditor.js';

const FONTS = { h1: [20, 'bold'], h2: [17, 'bold'], h3: [15, 'bold'], p: [13, ''], li: [13, ''], quote: [13, 'italic'],
  code: [12, ''] };

function font(kind, span) {
  const [size, weight] = FONTS[kind] ?? FONTS.p;
  const style = [span.italic ? 'italic' : '', span.bold || weight === 'bold' ? 'bold' : ''].join(' ').trim();
  return `${style} ${size}px ${span.code || kind === 'code' ? 'monospace' : 'sans-serif'}`.trim();
}

/** Lay out one block's spans in lines of at most `width` pixels: `[[{text, font, x}]]`. */
function layout(ctx, block, width) {
  const lines = [[]];
  let x = 0;
  for (const span of block.spans) {
    const f = font(block.kind, span);
    ctx.font = f;
    const pieces = span.text.split(/(\n|\s+)/);
    for (const piece of pieces) {
      if (piece === '\n') { lines.push([]); x = 0; continue; }
      if (piece === '') continue;
      const w = ctx.measureText(piece).width;
      if (x + w > width && x > 0 && piece.trim()) { lines.push([]); x = 0; }
      if (x === 0 && !piece.trim()) continue;
      lines.at(-1).push({ text: piece, font: f, x });
      x += w;
    }
  }
  return lines;
}

/** Draw `text` as Markdown from (x, y), `width` wide, stopping at `bottom`. */
export function drawMarkdown(ctx, text, x, y, width, bottom, color = '#ddd') {
  let top = y;
  for (const block of markdownBlocks(text)) {
    const [size] = FONTS[block.kind] ?? FONTS.p;
    const lineHeight = Math.round(size * 1.35);
    if (block.kind === 'rule') {
      ctx.fillStyle = '#888';
      ctx.fillRect(x, top + 4, width, 1);
      top += 10;
      continue;
    }
    const indent = block.kind === 'li' || block.kind === 'quote' ? 16 : 0;
    const lines = layout(ctx, block, width - indent);
    for (const [i, line] of lines.entries()) {
      if (top + lineHeight > bottom) return;
      top += lineHeight;
      ctx.fillStyle = block.kind === 'code' ? '#9cd' : color;
      if (i === 0 && block.marker) {
        ctx.font = font('p', {});
        ctx.fillText(block.marker, x, top - 4);
      }
      for (const piece of line) {
        ctx.font = piece.font;
        ctx.fillText(piece.text, x + indent + piece.x, top - 4);
      }
    }
    top += 4;
  }
}

/** The widget that shows a MarkdownNote's text rendered and edits its source on click. */
export function addMarkdownWidget(node) {
  const w = {
    type: 'markdown', name: 'text', value: '', options: {},
    computeSize: (width) => [width, Math.max(60, node.size[1] - 10)],
    draw(ctx, n, width, y) {
      ctx.save();
      drawMarkdown(ctx, w.value || '*empty note: click to write Markdown*', 10, y, width - 20, n.size[1] - 4);
      ctx.restore();
    },
    mouse(e, pos, n) {
      if (e.type !== 'pointerup') return false;
      openTextEditor(n, w, (text) => { w.value = text; n.setDirtyCanvas?.(true, true); });
      return true;
    },
  };
  return node.addCustomWidget(w);
}
