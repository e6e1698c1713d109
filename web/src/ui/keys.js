/**
 * Keyboard shortcuts: Ctrl+Enter queue, Ctrl+B bypass, Ctrl+M mute,
 * Ctrl+Z / Ctrl+Y (or Ctrl+Shift+Z) undo and redo, Ctrl+S save, Ctrl+O open,
 * Escape closes dialogs, the node search and context menus.
 * Copy, paste, delete and select-all are litegraph's own.
 */

import { LiteGraph } from '@comfyorg/litegraph';
import { saveWorkflow, openWorkflowDialog } from './files.js';
import { toast } from './toast.js';

function toggleMode(app, mode) {
  const nodes = Object.values(app.canvas.selected_nodes ?? {});
  if (!nodes.length) return;
  const allSet = nodes.every((n) => n.mode === mode);
  for (const n of nodes) n.mode = allSet ? 0 : mode;
  app.checkpoint();
  app.canvas.setDirty(true, true);
}

const ACTIONS = {
  Enter: (app, e) => app.queuePrompt(app.batchCount, { front: e.shiftKey }).catch((err) => toast(err.message, 'error')),
  b: (app) => toggleMode(app, 4),
  m: (app) => toggleMode(app, 2),
  z: (app, e) => (e.shiftKey ? app.redo() : app.undo()),
  y: (app) => app.redo(),
  s: (app) => saveWorkflow(app),
  o: (app) => openWorkflowDialog(app),
};

/** Listen for the editor's shortcuts (ignored while typing in a field). */
/** Close whatever overlays are open; true when something was closed. */
export function closeOverlays() {
  const open = [...document.querySelectorAll('.loom-dialog, .loom-search, .litecontextmenu')];
  for (const el of document.querySelectorAll('.loom-dialog, .loom-search')) el.remove();
  LiteGraph.closeAllContextMenus(window);
  return open.length > 0;
}

export function installKeys(app) {
  window.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && closeOverlays()) {
      e.preventDefault();
      return;
    }
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t?.isContentEditable) return;
    if (!(e.ctrlKey || e.metaKey)) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const action = ACTIONS[key];
    if (!action) return;
    e.preventDefault();
    e.stopPropagation();
    action(app, e);
  }, true);
  // Record mouse-made edits (moves, links, deletes) for undo once the pointer is released.
  window.addEventListener('pointerup', () => setTimeout(() => app.checkpoint(), 0));
  window.addEventListener('keyup', (e) => {
    if (!(e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement)) setTimeout(() => app.checkpoint(), 0);
  });
}
