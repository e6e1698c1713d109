/**
 * The Settings dialog: link render mode, snap to grid (and grid size), preview
 * method and theme. Values live on the server in the user's settings
 * (`/api/settings`, ComfyUI's ids where ComfyUI has the setting) so they follow
 * the user across browsers; each change applies at once and is saved.
 */

import { LiteGraph } from '@comfyorg/litegraph';
import { toast } from './toast.js';

export const SETTINGS = [
  {
    id: 'Comfy.LinkRenderMode', name: 'Link render mode', type: 'combo', default: 2,
    options: [['Spline', 2], ['Linear', 1], ['Straight', 0], ['Hidden', -1]],
    apply: (app, v) => { app.canvas.links_render_mode = Number(v); app.canvas.setDirty(true, true); },
  },
  {
    id: 'pysssss.SnapToGrid', name: 'Always snap to grid', type: 'boolean', default: false,
    apply: (app, v) => { LiteGraph.alwaysSnapToGrid = Boolean(v); },
  },
  {
    id: 'Comfy.SnapToGrid.GridSize', name: 'Snap to grid size', type: 'number', default: 10, min: 1, max: 500,
    apply: (app, v) => { LiteGraph.CANVAS_GRID_SIZE = Math.max(1, Number(v) || 10); },
  },
  {
    id: 'Loom.PreviewMethod', name: 'Live preview method', type: 'combo', default: 'default',
    options: [['Server default (--preview-method)', 'default'], ['Auto', 'auto'], ['Latent to RGB (fast)', 'latent2rgb'],
      ['TAESD (better)', 'taesd'], ['None', 'none']],
    apply: (app, v) => { app.previewMethod = v === 'default' ? null : v; },
  },
  {
    id: 'Comfy.ColorPalette', name: 'Theme', type: 'combo', default: 'dark',
    options: [['Dark', 'dark'], ['Light', 'light']],
    apply: (app, v) => {
      document.body.dataset.theme = v === 'light' ? 'light' : 'dark';
      app.canvas.clear_background_color = v === 'light' ? '#e8e8e8' : '#202020';
      app.canvas.setDirty(true, true);
    },
  },
];

/** Load the user's settings from the server and apply them (defaults where unset). */
export async function loadSettings(app) {
  let stored = {};
  try {
    stored = await app.api.getJson('settings');
  } catch (err) {
    toast(`Could not load your settings: ${err.message}`, 'error');
  }
  app.settings = {};
  for (const s of SETTINGS) {
    const value = stored?.[s.id] ?? s.default;
    app.settings[s.id] = value;
    s.apply(app, value);
  }
}

/** Change one setting: apply it now and save it on the server. */
export async function setSetting(app, id, value) {
  const s = SETTINGS.find((x) => x.id === id);
  if (!s) throw new Error(`unknown setting ${id}`);
  app.settings[id] = value;
  s.apply(app, value);
  const res = await app.api.postJson(`settings/${encodeURIComponent(id)}`, value);
  if (!res.ok) toast(`Could not save the setting "${s.name}": HTTP ${res.status}`, 'error');
}

function field(app, s) {
  const value = app.settings[s.id];
  let input;
  if (s.type === 'boolean') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = Boolean(value);
    input.addEventListener('change', () => setSetting(app, s.id, input.checked));
  } else if (s.type === 'number') {
    input = document.createElement('input');
    input.type = 'number';
    Object.assign(input, { min: s.min, max: s.max, value });
    input.addEventListener('change', () => setSetting(app, s.id, Number(input.value)));
  } else {
    input = document.createElement('select');
    for (const [label, v] of s.options) {
      const option = new Option(label, String(v), false, String(v) === String(value));
      input.append(option);
    }
    input.addEventListener('change', () => {
      const chosen = s.options.find(([, v]) => String(v) === input.value)?.[1];
      setSetting(app, s.id, chosen);
    });
  }
  input.dataset.setting = s.id;
  const label = document.createElement('label');
  label.className = 'setting';
  label.append(document.createTextNode(s.name), input);
  return label;
}

/** Open the Settings dialog (Escape or the close button closes it). */
export function openSettings(app) {
  document.getElementById('loom-settings')?.remove();
  const dialog = document.createElement('div');
  dialog.id = 'loom-settings';
  dialog.className = 'loom-dialog';
  dialog.setAttribute('role', 'dialog');
  const title = document.createElement('h3');
  title.textContent = 'Settings';
  const close = document.createElement('button');
  close.textContent = 'Close';
  close.className = 'close';
  close.addEventListener('click', () => dialog.remove());
  dialog.append(title, ...SETTINGS.map((s) => field(app, s)), close);
  document.body.append(dialog);
  return dialog;
}
