/**
 * Hover tooltips on the canvas: a node's description on its title, an
 * input's or widget's tooltip from its spec, an output's tooltip.
 */

import { LiteGraph } from '@comfyorg/litegraph';

function tipAt(app, e) {
  const [x, y] = app.canvas.convertEventToCanvasOffset(e);
  const node = app.graph.getNodeOnPos(x, y);
  if (!node) return null;
  const def = app.defs[node.comfyClass ?? node.type];
  const ly = y - node.pos[1];
  if (ly < 0) return def?.description || null;
  const slot = Math.floor((ly - 4) / LiteGraph.NODE_SLOT_HEIGHT);
  const lx = x - node.pos[0];
  if (lx < 20 && node.inputs?.[slot]) return node.inputs[slot].tooltip ?? null;
  if (lx > node.size[0] - 20 && node.outputs?.[slot]) return node.outputs[slot].tooltip ?? null;
  const w = node.getWidgetOnPos?.(x, y);
  return w?.tooltip ?? null;
}

/** Show tooltips after the pointer rests for a moment. */
export function installTooltips(app) {
  const tip = document.createElement('div');
  tip.className = 'loom-tooltip';
  document.body.appendChild(tip);
  let timer = null;
  app.canvasEl.addEventListener('pointermove', (e) => {
    tip.style.display = 'none';
    clearTimeout(timer);
    if (e.buttons) return;
    timer = setTimeout(() => {
      const text = tipAt(app, e);
      if (!text) return;
      tip.textContent = text;
      tip.style.left = `${e.clientX + 12}px`;
      tip.style.top = `${e.clientY + 12}px`;
      tip.style.display = 'block';
    }, 500);
  });
  app.canvasEl.addEventListener('pointerleave', () => { clearTimeout(timer); tip.style.display = 'none'; });
}
