/**
 * Live execution status from the websocket: which node runs, per-node and
 * overall progress, latent previews, output images (on their nodes and in
 * the gallery), execution errors, and the connection state.
 */

import { marksFromExecutionError } from '../graph/errors.js';
import { toast } from './toast.js';

function setOverall(app) {
  const bar = document.getElementById('overall-progress');
  const label = document.getElementById('overall-label');
  const { done, total, node } = app.exec;
  const n = app.exec.nodeProgress[node];
  const frac = total ? (done + (n?.max ? n.value / n.max : 0)) / total : 0;
  // After a run the bar stays full until the next one starts.
  if (bar) bar.style.width = `${Math.round(Math.min(1, frac) * 100)}%`;
  if (label) label.textContent = app.exec.promptId ? `${Math.round(Math.min(1, frac) * 100)}%` : '';
}

function outputImages(app, output) {
  return [...(output?.images ?? []), ...(output?.gifs ?? [])]
    .map((ref) => ({ ref, url: app.api.viewURL(ref) }));
}

function onExecuted(app, d) {
  const node = app.nodeById(d.display_node ?? d.node);
  const images = outputImages(app, d.output);
  if (node && images.length) app.setNodeImages(node, images.map((i) => i.url));
  if (images.length) app.panels?.addToGallery(images, d.prompt_id);
}

function countToRun(app, promptId) {
  // Overall progress counts the executable nodes of the prompt just queued.
  return promptId && app.lastPromptId === promptId ? Object.keys(app.graphToPrompt().output).length : 0;
}

/** Subscribe the app to the API's websocket events. */
export function installStatus(app) {
  const api = app.api;
  const on = (type, fn) => api.addEventListener(type, (e) => { fn(e.detail ?? {}); app.canvas.setDirty(true, true); });
  on('status', (d) => {
    const q = d.status?.exec_info?.queue_remaining ?? 0;
    document.getElementById('queue-size').textContent = `Queue: ${q}`;
    app.panels?.refresh();
  });
  on('execution_start', (d) => {
    Object.assign(app.exec, { promptId: d.prompt_id, node: null, nodeProgress: {}, done: 0, total: countToRun(app, d.prompt_id), preview: null });
    app.marks = { message: null, nodes: {} };
    setOverall(app);
  });
  on('execution_cached', (d) => { app.exec.done += (d.nodes ?? []).length; setOverall(app); });
  on('executing', (d) => {
    if (app.exec.node) app.exec.done += 1;
    app.exec.node = d.node == null ? null : String(d.display_node ?? d.node);
    app.exec.preview = null;
    if (d.node == null) app.exec.promptId = null;
    setOverall(app);
  });
  on('progress', (d) => {
    app.exec.nodeProgress[String(d.node ?? app.exec.node)] = { value: d.value, max: d.max };
    setOverall(app);
  });
  on('executed', (d) => onExecuted(app, d));
  on('execution_success', () => {
    Object.assign(app.exec, { promptId: null, node: null, preview: null, nodeProgress: {}, done: 1, total: 1 });
    setOverall(app);
    app.panels?.refresh();
  });
  on('execution_error', (d) => {
    app.marks = marksFromExecutionError(d);
    Object.assign(app.exec, { promptId: null, node: null, preview: null, nodeProgress: {} });
    toast(`Error in node #${d.node_id} (${d.node_type}): ${d.exception_message}`, 'error', 10000);
    setOverall(app);
    app.panels?.refresh();
  });
  on('execution_interrupted', () => {
    Object.assign(app.exec, { promptId: null, node: null, preview: null, nodeProgress: {} });
    toast('Execution interrupted');
    setOverall(app);
  });
  on('b_preview', (blob) => {
    const img = new Image();
    img.onload = () => app.canvas.setDirty(true, true);
    img.src = URL.createObjectURL(blob);
    if (app.exec.preview?.src) URL.revokeObjectURL(app.exec.preview.src);
    app.exec.preview = img;
    // A default-size sampler has no room below its widgets: make some, as for output images.
    const node = app.exec.node != null ? app.nodeById(app.exec.node) : null;
    if (node && !node.flags?.collapsed) app.makeRoomForImage(node);
  });
  const conn = document.getElementById('connection');
  on('connected', () => { conn.textContent = 'connected'; conn.className = 'ok'; });
  on('reconnecting', () => { conn.textContent = 'reconnecting…'; conn.className = 'bad'; });
  on('reconnected', () => {
    conn.textContent = 'connected';
    conn.className = 'ok';
    toast('Reconnected to the server');
    app.panels?.refresh();
  });
  api.connect();
}
