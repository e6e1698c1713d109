/**
 * The node search box: opened by a double-click on empty canvas, it ranks
 * node definitions by fuzzy match on name, display name and category, shows
 * each one's category and description, and adds the chosen node there.
 * Releasing a dragged link on empty canvas opens it filtered to the nodes
 * that can take (or give) the link's type, and connects the chosen one.
 */

import { LiteGraph } from '@comfyorg/litegraph';
import { searchNodeDefs } from '../graph/fuzzy.js';
import { describeNode } from '../graph/specs.js';
import { typesMatch } from '../graph/types.js';

/** Create node `type` at graph position `pos`, select it and record the edit. */
export function addNodeAt(app, type, pos) {
  const node = LiteGraph.createNode(type);
  if (!node) throw new Error(`unknown node type ${type}`);
  node.pos = [pos[0], pos[1]];
  app.graph.add(node);
  app.canvas.selectNode(node);
  app.checkpoint();
  return node;
}

// Frontend-only nodes that are searchable beside the server's definitions.
const VIRTUAL_DEFS = {
  Reroute: { display_name: 'Reroute', category: 'utils', description: 'Passes a link through, to tidy long wires' },
  Note: { display_name: 'Note', category: 'utils', description: 'A text note; not executed' },
  PrimitiveNode: { display_name: 'Primitive', category: 'utils', description: 'A constant that drives widget inputs' },
};

/**
 * The definitions a link of `type` can connect to: nodes with an input that takes it (`from: 'output'`, a
 * link dragged out of an output) or with an output that gives it (`from: 'input'`).
 */
export function defsForLink(defs, type, from) {
  const out = {};
  for (const [name, def] of Object.entries(defs)) {
    const d = describeNode(def);
    const ok = from === 'output' ? d.sockets.some((sock) => typesMatch(type, sock.type))
      : d.outputs.some((o) => typesMatch(o.type, type));
    if (ok) out[name] = def;
  }
  return out;
}

function renderResults(app, list, query, linkFilter = null) {
  const defs = linkFilter ? defsForLink(app.defs, linkFilter.type, linkFilter.from) : { ...VIRTUAL_DEFS, ...app.defs };
  const results = searchNodeDefs(defs, query, 40);
  list.replaceChildren(...results.map((r, i) => {
    const li = document.createElement('li');
    li.dataset.type = r.name;
    li.className = i === 0 ? 'selected' : '';
    li.title = r.def.description ?? '';
    const title = document.createElement('span');
    title.textContent = r.def.display_name ?? r.name;
    const cat = document.createElement('small');
    cat.textContent = `${r.def.category ?? ''}  ${r.name}`;
    li.append(title, cat);
    return li;
  }));
}

/** Connect the new `node` to the dragged link (its first slot of a matching type). */
function connectToLink(node, link) {
  if (link.output) {
    const slot = (node.inputs ?? []).findIndex((i) => typesMatch(link.output.type, i.type));
    if (slot >= 0) link.node.connect(link.slot, node, slot);
  } else if (link.input) {
    const slot = (node.outputs ?? []).findIndex((o) => typesMatch(o.type, link.input.type));
    if (slot >= 0) node.connect(slot, link.node, link.slot);
  }
}

/** Open the search box at a mouse event's position (`link`: a dragged link to connect the new node to). */
export function openSearchBox(app, event, link = null) {
  const linkFilter = link ? { type: (link.output ?? link.input).type, from: link.output ? 'output' : 'input' } : null;
  document.querySelector('.loom-search')?.remove();
  const graphPos = app.canvas.convertEventToCanvasOffset(event);
  const box = document.createElement('div');
  box.className = 'loom-search';
  box.style.left = `${event.clientX}px`;
  box.style.top = `${event.clientY}px`;
  const input = document.createElement('input');
  input.placeholder = 'Search nodes…';
  const list = document.createElement('ul');
  const desc = document.createElement('div');
  desc.className = 'desc';
  box.append(input, list, desc);
  document.body.appendChild(box);
  const close = () => box.remove();
  const choose = (li) => {
    if (!li) return;
    const node = addNodeAt(app, li.dataset.type, graphPos);
    if (link) connectToLink(node, link);
    app.checkpoint();
    close();
  };
  const move = (d) => {
    const items = [...list.children];
    const at = items.findIndex((x) => x.classList.contains('selected'));
    items[at]?.classList.remove('selected');
    const next = items[Math.max(0, Math.min(items.length - 1, at + d))];
    next?.classList.add('selected');
    next?.scrollIntoView({ block: 'nearest' });
    desc.textContent = next?.title ?? '';
  };
  input.addEventListener('input', () => { renderResults(app, list, input.value, linkFilter); move(0); });
  input.addEventListener('keydown', (e) => {
    e.stopPropagation();
    if (e.key === 'Escape') close();
    else if (e.key === 'Enter') choose(list.querySelector('.selected'));
    else if (e.key === 'ArrowDown') { move(1); e.preventDefault(); }
    else if (e.key === 'ArrowUp') { move(-1); e.preventDefault(); }
  });
  list.addEventListener('click', (e) => choose(e.target.closest('li')));
  input.addEventListener('blur', () => setTimeout(() => { if (!box.matches(':hover')) close(); }, 150));
  renderResults(app, list, '', linkFilter);
  if (linkFilter) input.placeholder = `Search nodes for ${linkFilter.type}…`;
  setTimeout(() => input.focus(), 0);
  return box;
}

/** Open the search box on double-clicks that land on empty canvas. */
export function installSearch(app) {
  app.canvasEl.addEventListener('dblclick', (e) => {
    const [x, y] = app.canvas.convertEventToCanvasOffset(e);
    if (app.graph.getNodeOnPos(x, y)) return;
    openSearchBox(app, e);
  });
  app.canvasEl.addEventListener('litegraph:canvas', (e) => {
    if (e.detail?.subType !== 'empty-release') return;
    const link = e.detail.linkReleaseContext?.links?.[0];
    if (link && (link.output || link.input)) openSearchBox(app, e.detail.originalEvent, link);
  });
}
