/**
 * Canvas widgets built from the plain widget descriptions of graph/specs.js:
 * numbers (min/max/step, drag), seed controls, combos, single- and multi-line
 * text, toggles, and LoadImage's upload button and preview.
 */

import { CONTROL_VALUES } from '../graph/specs.js';
import { openTextEditor } from './texteditor.js';

const decimals = (step) => {
  const s = String(step);
  return s.includes('e-') ? Number(s.split('e-')[1]) : (s.split('.')[1] ?? '').length;
};

/** Clamp and round a number widget's value to its description. */
export function normaliseNumber(desc, value) {
  let v = Number(value);
  if (!Number.isFinite(v)) v = desc.default;
  v = Math.min(desc.max, Math.max(desc.min, v));
  if (desc.integer) return Math.round(v);
  const r = desc.round || desc.step;
  return r ? Number((Math.round(v / r) * r).toFixed(decimals(r))) : v;
}

function addNumber(node, d, onChange) {
  const w = node.addWidget('number', d.name, d.default, (v) => {
    w.value = normaliseNumber(d, v);
    onChange(w);
  }, {
    min: d.min, max: d.max, step2: d.step, step: d.step * 10,
    precision: d.integer ? 0 : decimals(d.round || d.step), round: d.integer ? 1 : d.round,
  });
  if (d.control) {
    const c = node.addWidget('combo', 'control_after_generate', 'randomize', () => onChange(c),
      { values: CONTROL_VALUES, serialize: true });
    c.isControl = true;
    w.linkedControl = c;
  }
  return w;
}

function multilineWidget(node, d, onChange) {
  const w = {
    type: 'customtext', name: d.name, value: d.default, options: {},
    computeSize: (width) => [width, 90],
    draw(ctx, n, width, y) {
      ctx.fillStyle = '#1a1a1a';
      ctx.strokeStyle = '#555';
      ctx.beginPath();
      ctx.roundRect(10, y, width - 20, 84, 6);
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = w.value ? '#ddd' : '#777';
      ctx.font = '12px sans-serif';
      const lines = wrapText(ctx, w.value || d.name, width - 34).slice(0, 5);
      lines.forEach((line, i) => ctx.fillText(line, 17, y + 17 + i * 15));
    },
    mouse(e, pos, n) {
      if (e.type !== 'pointerup') return false;
      openTextEditor(n, w, (text) => { w.value = text; onChange(w); });
      return true;
    },
  };
  return node.addCustomWidget(w);
}

/** Wrap text into lines no wider than `maxWidth` pixels. */
export function wrapText(ctx, text, maxWidth) {
  const out = [];
  for (const para of String(text).split('\n')) {
    let line = '';
    for (const word of para.split(' ')) {
      const next = line ? `${line} ${word}` : word;
      if (line && ctx.measureText(next).width > maxWidth) {
        out.push(line);
        line = word;
      } else line = next;
    }
    out.push(line);
  }
  return out;
}

function uploadWidget(node, comboWidget, app) {
  const w = {
    type: 'loomupload', name: 'upload', value: 'image', options: { serialize: false },
    draw(ctx, n, width, y, H) {
      ctx.fillStyle = '#2b3b4b';
      ctx.beginPath();
      ctx.roundRect(15, y, width - 30, H, H / 2);
      ctx.fill();
      ctx.fillStyle = '#ddd';
      ctx.textAlign = 'center';
      ctx.fillText('choose file to upload', width / 2, y + H * 0.7);
      ctx.textAlign = 'left';
    },
    mouse(e) {
      if (e.type !== 'pointerup') return false;
      const input = document.createElement('input');
      input.type = 'file';
      input.accept = 'image/png,image/jpeg,image/webp';
      input.addEventListener('change', async () => {
        if (input.files?.[0]) await app.uploadToCombo(node, comboWidget, input.files[0]);
      });
      input.click();
      return true;
    },
  };
  return node.addCustomWidget(w);
}

/** Show the chosen input image of a LoadImage-like node as its preview. */
export function showInputPreview(node, value, app) {
  if (!value) return;
  const text = String(value).replace(/ \[(input|output|temp)\]$/, '');
  const type = /\[(output|temp)\]$/.exec(String(value))?.[1] ?? 'input';
  const cut = text.lastIndexOf('/');
  const ref = { filename: text.slice(cut + 1), subfolder: cut >= 0 ? text.slice(0, cut) : '', type };
  node.imageRef = ref;
  app.setNodeImages(node, [app.api.viewURL(ref, { rand: Math.random().toString(36).slice(2) })]);
}

/**
 * Add the widgets of a node from its description (graph/specs.describeNode).
 * `onChange(widget)` runs after any widget value changes.
 */
export function addWidgets(node, description, app, onChange) {
  for (const d of description.widgets) {
    let w;
    if (d.kind === 'number') w = addNumber(node, d, onChange);
    else if (d.kind === 'combo') {
      w = node.addWidget('combo', d.name, d.default, () => onChange(w), { values: d.values });
      if (d.upload) {
        uploadWidget(node, w, app);
        node.isImageLoader = true;
        const base = onChange;
        onChange = (x) => { if (x === w) showInputPreview(node, w.value, app); base(x); };
        const cb = w.callback;
        w.callback = (...a) => { showInputPreview(node, w.value, app); cb?.(...a); };
      }
    } else if (d.kind === 'multiline') w = multilineWidget(node, d, onChange);
    else if (d.kind === 'text') w = node.addWidget('text', d.name, d.default, () => onChange(w), {});
    else if (d.kind === 'toggle') {
      w = node.addWidget('toggle', d.name, d.default, () => onChange(w), { on: d.labelOn, off: d.labelOff });
    }
    if (!w) continue;
    w.tooltip = d.tooltip;
    w.inputType = d.type;
    w.desc = d;
  }
}
