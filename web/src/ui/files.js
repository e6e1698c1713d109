/**
 * Workflow files: save and load UI-format JSON, export the API format, and
 * drag and drop of a JSON file or a PNG that carries a workflow. An image
 * without a workflow becomes a LoadImage node showing the uploaded file, at
 * the drop point, as in ComfyUI.
 */

import { LiteGraph } from '@comfyorg/litegraph';
import { workflowFromPng, isPng } from '../graph/png.js';
import { toast } from './toast.js';

const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/bmp'];

/** Upload `file` to input/ and add a LoadImage node at canvas position `pos` showing it. */
export async function addLoadImageNode(app, file, pos = null) {
  const node = LiteGraph.createNode('LoadImage');
  if (!node) throw new Error('this server has no LoadImage node');
  const combo = node.widgets?.find((w) => w.name === 'image');
  const value = await app.uploadToCombo(node, combo, file);
  node.pos = pos ?? [...app.canvas.visible_area.slice(0, 2)].map((v) => v + 40);
  app.graph.add(node);
  app.canvas.selectNode(node);
  app.checkpoint();
  toast(`Uploaded ${value}`);
  return node;
}

function download(name, text) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

/** Save the current workflow (UI format) as a JSON download. */
export function saveWorkflow(app, name = 'workflow.json') {
  download(name, JSON.stringify(app.serialize(), null, 2));
}

/** Export the API-format prompt as a JSON download. */
export function exportApi(app, name = 'workflow_api.json') {
  download(name, JSON.stringify(app.graphToPrompt().output, null, 2));
}

/** Load a parsed JSON value: a UI workflow, or an API prompt. */
export function loadJsonValue(app, value) {
  if (Array.isArray(value?.nodes)) app.loadGraph(value);
  else if (value && typeof value === 'object' && Object.values(value).every((n) => n?.class_type)) app.loadApiPrompt(value);
  else throw new Error('this JSON is neither a UI workflow nor an API prompt');
}

/** Load a File (JSON, or PNG with metadata); any other image becomes a LoadImage node at `pos`. */
export async function loadFile(app, file, pos = null) {
  const buf = await file.arrayBuffer();
  const found = isPng(buf) ? workflowFromPng(buf) : null;
  if (found) {
    if (found.workflow) app.loadGraph(found.workflow);
    else app.loadApiPrompt(found.prompt);
  } else if (isPng(buf) || IMAGE_TYPES.includes(file.type)) {
    await addLoadImageNode(app, file, pos);
    return;
  } else {
    loadJsonValue(app, JSON.parse(new TextDecoder().decode(buf)));
  }
  toast(`Loaded ${file.name}`);
}

/** A file chooser for workflows. */
export function openWorkflowDialog(app) {
  const input = document.createElement('input');
  input.type = 'file';
  input.accept = '.json,.png,application/json,image/png';
  input.addEventListener('change', () => {
    if (input.files?.[0]) loadFile(app, input.files[0]).catch((err) => toast(err.message, 'error'));
  });
  input.click();
}

/** Accept dropped workflow files anywhere on the page. */
export function installDrop(app) {
  document.addEventListener('dragover', (e) => e.preventDefault());
  document.addEventListener('drop', async (e) => {
    e.preventDefault();
    const file = e.dataTransfer?.files?.[0];
    if (!file) return;
    const pos = app.canvas?.convertEventToCanvasOffset ? app.canvas.convertEventToCanvasOffset(e) : null;
    try {
      await loadFile(app, file, pos);
    } catch (err) {
      toast(`Could not load ${file.name}: ${err.message}`, 'error');
    }
  });
}
