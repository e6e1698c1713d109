/**
 * A simple mask painter for inpainting: paint over a LoadImage node's image,
 * then the mask is uploaded to /upload/mask with the original's reference.
 * As in ComfyUI, the painted area is stored as transparency (alpha 0) and
 * LoadImage's MASK output is 1 - alpha.
 */

import { toast } from './toast.js';

function button(label, onclick) {
  const b = document.createElement('button');
  b.textContent = label;
  b.addEventListener('click', onclick);
  return b;
}

function paintHandlers(view, mask, size) {
  let drawing = false;
  const ctxV = view.getContext('2d');
  const ctxM = mask.getContext('2d');
  const at = (e) => {
    const r = view.getBoundingClientRect();
    return [(e.clientX - r.left) * (view.width / r.width), (e.clientY - r.top) * (view.height / r.height)];
  };
  const stamp = (x, y, r, erase) => {
    ctxM.globalCompositeOperation = erase ? 'source-over' : 'destination-out';
    ctxM.beginPath();
    ctxM.arc(x, y, r, 0, Math.PI * 2);
    ctxM.fill();
    ctxV.globalCompositeOperation = erase ? 'destination-out' : 'source-over';
    ctxV.fillStyle = 'rgba(255,255,255,0.7)';
    ctxV.beginPath();
    ctxV.arc(x, y, r, 0, Math.PI * 2);
    ctxV.fill();
  };
  let last = null;
  // Stamps are spaced a quarter radius apart along the stroke, so fast moves leave no gaps.
  const dab = (e) => {
    const [x, y] = at(e);
    const r = size();
    const erase = e.buttons === 2 || e.shiftKey;
    const [x0, y0] = last ?? [x, y];
    const n = Math.max(1, Math.ceil(Math.hypot(x - x0, y - y0) / (r / 4)));
    for (let i = 1; i <= n; i++) stamp(x0 + ((x - x0) * i) / n, y0 + ((y - y0) * i) / n, r, erase);
    last = [x, y];
  };
  view.addEventListener('pointerdown', (e) => { drawing = true; last = null; dab(e); });
  view.addEventListener('pointermove', (e) => { if (drawing) dab(e); });
  window.addEventListener('pointerup', () => { drawing = false; last = null; });
  view.addEventListener('contextmenu', (e) => e.preventDefault());
}

/** Open the painter for `node` (a LoadImage-like node with an image chosen). */
export function openMaskEditor(app, node) {
  const img = node.imgs?.[0];
  const ref = node.imageRef;
  if (!img?.naturalWidth || !ref) {
    toast('Choose an image on the node first', 'error');
    return;
  }
  const dlg = document.createElement('div');
  dlg.className = 'loom-modal mask-editor';
  const stage = document.createElement('div');
  stage.className = 'mask-stage';
  const base = document.createElement('img');
  base.src = img.src;
  const view = document.createElement('canvas');
  const mask = document.createElement('canvas');
  for (const c of [view, mask]) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
  const mctx = mask.getContext('2d');
  mctx.fillStyle = '#000';
  mctx.fillRect(0, 0, mask.width, mask.height);
  stage.append(base, view);
  const sizeInput = document.createElement('input');
  Object.assign(sizeInput, { type: 'range', min: 2, max: 200, value: 24, title: 'brush size' });
  // The brush size is in screen pixels, whatever the image's scale on screen.
  paintHandlers(view, mask, () => Number(sizeInput.value) * (view.width / (view.getBoundingClientRect().width || view.width)));
  const save = async () => {
    const blob = await new Promise((r) => mask.toBlob(r, 'image/png'));
    const file = new File([blob], `clipspace-mask-${Date.now()}.png`, { type: 'image/png' });
    try {
      const res = await app.api.upload(file, {
        route: 'upload/mask', subfolder: 'clipspace', type: 'input',
        extra: { original_ref: JSON.stringify(ref) },
      });
      const combo = node.widgets.find((w) => w.type === 'combo');
      const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
      if (!combo.options.values.includes(value)) combo.options.values = [...combo.options.values, value];
      combo.value = value;
      combo.callback?.(value);
      app.checkpoint();
      dlg.remove();
    } catch (err) {
      toast(err.message, 'error');
    }
  };
  const bar = document.createElement('div');
  bar.className = 'mask-bar';
  bar.append('Brush ', sizeInput, button('Clear', () => {
    mctx.globalCompositeOperation = 'source-over';
    mctx.fillRect(0, 0, mask.width, mask.height);
    view.getContext('2d').clearRect(0, 0, view.width, view.height);
  }), button('Cancel', () => dlg.remove()), button('Save mask', save));
  dlg.append(stage, bar);
  document.body.appendChild(dlg);
  // Show the image as large as the stage allows (small images are scaled up too).
  const r = stage.getBoundingClientRect();
  const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
  for (const el of [base, view]) {
    el.style.width = `${img.naturalWidth * s}px`;
    el.style.height = `${img.naturalHeight * s}px`;
  }
}
