/**
 * The canvas context menu's "Add Node": a submenu per category path
 * ("sampling" → "custom_sampling" → ...), the node types of each level after its
 * folders, and the chosen node added where the menu was opened. litegraph's own
 * version stops at its empty root category and shows nothing.
 */

import { LiteGraph, LGraphCanvas } from '@comfyorg/litegraph';
import { addNodeAt } from './search.js';
import { menuLevel } from '../graph/categories.js';

function registeredTypes() {
  return Object.entries(LiteGraph.registered_node_types)
    .filter(([, cls]) => !cls.skip_list)
    .map(([type, cls]) => ({ type, title: cls.title ?? type, category: cls.category ?? '' }));
}

function openLevel(app, path, event, parentMenu) {
  const { folders, nodes } = menuLevel(registeredTypes(), path);
  const entries = [
    ...folders.map((name) => ({
      content: name, has_submenu: true,
      callback: (value, options, e, menu) => { openLevel(app, path ? `${path}/${name}` : name, e, menu); },
    })),
    ...nodes.map((n) => ({
      content: n.title,
      callback: (value, options, e, menu) => {
        const first = menu?.getFirstEvent?.() ?? e;
        addNodeAt(app, n.type, app.canvas.convertEventToCanvasOffset(first));
      },
    })),
  ];
  return new LiteGraph.ContextMenu(entries, { event, parentMenu }, window);
}

/** Replace litegraph's "Add Node" submenu with one built from the registered categories. */
export function installAddNodeMenu(app) {
  LGraphCanvas.onMenuAdd = (node, options, event, parentMenu) => {
    openLevel(app, '', event, parentMenu);
    return false;
  };
}
