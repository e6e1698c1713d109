/**
 * Building graph documents as plain data (ComfyUI's UI workflow format,
 * version 0.4): small pure functions, each returning a new document and never
 * mutating its argument. They make the documents the editor loads (the
 * default graph, API prompts imported as graphs, tests). Once a document is
 * loaded, the live litegraph graph in app.js is the source of truth while the
 * user edits; `App.serialize()` turns it back into this format for saving,
 * undo history, localStorage and queueing.
 */

import { describeNode, defaultWidgetValues } from './specs.js';
import { typesMatch } from './types.js';
import { linkRecord } from './toapi.js';

/** An empty UI workflow. */
export function emptyWorkflow() {
  return {
    last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [],
    config: {}, extra: {}, version: 0.4,
  };
}

const clone = (doc) => structuredClone(doc);

/** A node record built from its `/object_info` definition. */
export function nodeFromDef(type, def, id, pos = [0, 0]) {
  const { sockets, widgets, outputs } = describeNode(def);
  return {
    id, type, pos: [...pos], size: [320, 100 + 24 * (sockets.length + widgets.length)],
    flags: {}, order: id, mode: 0,
    inputs: sockets.map((s) => ({ name: s.name, type: s.type, link: null })),
    outputs: outputs.map((o, i) => ({ name: o.name, type: o.type, links: [], slot_index: i })),
    properties: { 'Node name for S&R': type },
    widgets_values: widgets.length ? defaultWidgetValues(def) : [],
  };
}

/** Add a node; returns `{doc, id}`. `node` is a record without an id. */
export function addNode(doc, node) {
  const next = clone(doc);
  const id = next.last_node_id + 1;
  next.last_node_id = id;
  next.nodes.push({ ...structuredClone(node), id });
  return { doc: next, id };
}

/** Find a node record by id in a document. */
export function getNode(doc, id) {
  return doc.nodes.find((n) => String(n.id) === String(id)) ?? null;
}

function dropLink(doc, linkId) {
  const i = doc.links.findIndex((l) => String(linkRecord(l).id) === String(linkId));
  if (i < 0) return;
  const r = linkRecord(doc.links[i]);
  doc.links.splice(i, 1);
  const from = getNode(doc, r.from);
  const out = from?.outputs?.[r.fromSlot];
  if (out?.links) out.links = out.links.filter((id) => String(id) !== String(linkId));
  const to = getNode(doc, r.to);
  if (to?.inputs?.[r.toSlot]?.link === linkId) to.inputs[r.toSlot].link = null;
}

/** Remove the link feeding input `slot` of node `to`. */
export function disconnect(doc, to, slot) {
  const next = clone(doc);
  const linkId = getNode(next, to)?.inputs?.[slot]?.link;
  if (linkId != null) dropLink(next, linkId);
  return next;
}

/**
 * Connect output `fromSlot` of `from` to input `toSlot` of `to`, replacing
 * what fed that input. Throws when the socket types do not match.
 */
export function connect(doc, from, fromSlot, to, toSlot) {
  const next = clone(doc);
  const src = getNode(next, from);
  const dst = getNode(next, to);
  const out = src?.outputs?.[fromSlot];
  const inp = dst?.inputs?.[toSlot];
  if (!out || !inp) throw new Error(`no such slot: ${from}:${fromSlot} -> ${to}:${toSlot}`);
  if (!typesMatch(out.type, inp.type)) {
    throw new Error(`cannot connect ${out.type} to ${inp.type} (${inp.name})`);
  }
  if (inp.link != null) dropLink(next, inp.link);
  const id = next.last_link_id + 1;
  next.last_link_id = id;
  next.links.push([id, src.id, fromSlot, dst.id, toSlot, out.type]);
  out.links = [...(out.links ?? []), id];
  inp.link = id;
  return next;
}

/** Remove a node and every link touching it. */
export function removeNode(doc, id) {
  const next = clone(doc);
  const touching = next.links.map(linkRecord)
    .filter((r) => String(r.from) === String(id) || String(r.to) === String(id));
  for (const r of touching) dropLink(next, r.id);
  next.nodes = next.nodes.filter((n) => String(n.id) !== String(id));
  return next;
}

/** Apply `patch` (fields such as pos, mode, title, widgets_values, flags) to a node. */
export function updateNode(doc, id, patch) {
  const next = clone(doc);
  const node = getNode(next, id);
  if (!node) throw new Error(`no node ${id}`);
  Object.assign(node, structuredClone(patch));
  return next;
}

/** Set one entry of a node's `widgets_values`. */
export function setWidgetValue(doc, id, index, value) {
  const node = getNode(doc, id);
  const values = [...(node?.widgets_values ?? [])];
  values[index] = value;
  return updateNode(doc, id, { widgets_values: values });
}

/** Add a group (a titled rectangle) to the document. */
export function addGroup(doc, title, bounding, color = '#3f789e') {
  const next = clone(doc);
  const id = Math.max(0, ...next.groups.map((g) => g.id ?? 0)) + 1;
  next.groups.push({ id, title, bounding: [...bounding], color, font_size: 24, flags: {} });
  return next;
}
