/**
 * The node search box: opened by a double-click on empty canvas, it ranks
 * node definitions by fuzzy match on name, display name and category, shows
 * each one's category and description, and adds the chosen node there.
 */

import { LiteGraph } from '@comfyorg/litegraph';
import { searchNodeDefs } from '../graph/fuzzy.js';

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

function renderResults(app, list, query) {
  const results = searchNodeDefs({ ...VIRTUAL_DEFS, ...app.defs }, query, 40);
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

/** Open the search box at a mouse event's position. */
export function openSearchBox(app, event) {
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
  const choose = (li) => { if (li) { addNodeAt(app, li.dataset.type, graphPos); close(); } };
  const move = (d) => {
    const items = [...list.children];
    const at = items.findIndex((x) => x.classList.contains('selected'));
    items[at]?.classList.remove('selected');
    const next = items[Math.max(0, Math.min(items.length - 1, at + d))];
    next?.classList.add('selected');
    next?.scrollIntoView({ block: 'nearest' });
    desc.textContent = next?.title ?? '';
  };
  input.addEventListener('input', () => { renderResults(app, list, input.value); move(0); });
  input.addEventListener('keydown', (e) => {
    e.stopPropagation();
    if (e.key === 'Escape') close();
    else if (e.key === 'Enter') choose(list.querySelector('.selected'));
    else if (e.key === 'ArrowDown') { move(1); e.preventDefault(); }
    else if (e.key === 'ArrowUp') { move(-1); e.preventDefault(); }
  });
  list.addEventListener('click', (e) => choose(e.target.closest('li')));
  input.addEventListener('blur', () => setTimeout(() => { if (!box.matches(':hover')) close(); }, 150));
  renderResults(app, list, '');
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
}
