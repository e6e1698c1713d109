/**
 * Workflow files: save and load UI-format JSON, export the API format, and
 * drag and drop of a JSON file or a PNG that carries a workflow.
 */

import { workflowFromPng, isPng } from '../graph/png.js';
import { toast } from './toast.js';

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

/** Load a File (JSON or PNG with metadata). */
export async function loadFile(app, file) {
  const buf = await file.arrayBuffer();
  if (isPng(buf)) {
    const found = workflowFromPng(buf);
    if (!found) throw new Error(`${file.name} carries no workflow`);
    if (found.workflow) app.loadGraph(found.workflow);
    else app.loadApiPrompt(found.prompt);
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
    try {
      await loadFile(app, file);
    } catch (err) {
      toast(`Could not load ${file.name}: ${err.message}`, 'error');
    }
  });
}
