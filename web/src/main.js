/**
 * Entry point: builds the app, wires the toolbar, panels, search, files,
 * shortcuts, tooltips and live status, and exposes the app to extensions as
 * `window.loomApp` (and `window.app`, the name ComfyUI extensions use).
 */

import '@comfyorg/litegraph/style.css';
import './style.css';
import { LoomApp } from './app.js';
import { Panels } from './ui/panels.js';
import { installSearch } from './ui/search.js';
import { installDrop, saveWorkflow, exportApi, openWorkflowDialog } from './ui/files.js';
import { installKeys } from './ui/keys.js';
import { installAddNodeMenu } from './ui/menus.js';
import { installTooltips } from './ui/tooltips.js';
import { installStatus } from './ui/status.js';
import { toast } from './ui/toast.js';
import { loadSettings, openSettings } from './ui/settings.js';

const app = new LoomApp();
window.loomApp = app;
window.app ??= app;

function resize() {
  const el = app.canvasEl;
  const r = el.parentElement.getBoundingClientRect();
  el.width = r.width * devicePixelRatio;
  el.height = r.height * devicePixelRatio;
  el.style.width = `${r.width}px`;
  el.style.height = `${r.height}px`;
  app.canvas?.resize?.(el.width, el.height);
  app.canvas?.setDirty(true, true);
}

function wireToolbar() {
  const $ = (id) => document.getElementById(id);
  const guard = (fn) => () => Promise.resolve(fn()).catch((err) => toast(err.message, 'error'));
  $('queue-button').addEventListener('click', guard(() => app.queuePrompt(app.batchCount)));
  $('batch-count').addEventListener('change', (e) => { app.batchCount = Math.max(1, Number(e.target.value) || 1); });
  $('save-button').addEventListener('click', () => saveWorkflow(app));
  $('load-button').addEventListener('click', () => openWorkflowDialog(app));
  $('export-button').addEventListener('click', () => exportApi(app));
  $('refresh-button').addEventListener('click', guard(() => app.refreshComboLists()));
  $('default-button').addEventListener('click', () => { app.loadGraph(app.defaultGraph()); });
  $('clear-button').addEventListener('click', () => { app.graph.clear(); app.checkpoint(); });
  $('interrupt-button').addEventListener('click', guard(() => app.api.interrupt()));
  $('settings-button').addEventListener('click', () => openSettings(app));
}

async function start() {
  const canvasEl = document.getElementById('graph-canvas');
  app.canvasEl = canvasEl;
  resize();
  await app.setup(canvasEl);
  await loadSettings(app);
  resize();
  window.addEventListener('resize', resize);
  app.panels = new Panels(app, document.getElementById('side-panel'));
  wireToolbar();
  installSearch(app);
  installAddNodeMenu(app);
  installDrop(app);
  installKeys(app);
  installTooltips(app);
  installStatus(app);
  app.panels.refresh();
  window.addEventListener('beforeunload', () => localStorage.setItem('loom.workflow', JSON.stringify(app.serialize())));
  document.body.dataset.ready = 'true';
}

function boot() {
  start().catch((err) => {
    console.error('the editor failed to start', err);
    toast(`The editor failed to start: ${err.message}`, 'error', 60000);
  });
}

// The bundle is loaded by an async loader script, so the DOM may still be parsing.
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
