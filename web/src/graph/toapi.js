/**
 * UI-format workflow -> API-format prompt, on plain data.
 *
 * Follows what ComfyUI's frontend sends: widget values are put on the inputs
 * named by the definition's `input_order` (skipping the control_after_generate
 * value after a seed); links are followed through frontend-only nodes:
 * `Reroute` (passes its input on), `PrimitiveNode` (becomes a constant),
 * bypassed nodes (mode 4: an output is replaced by the node's input of the
 * same type); muted nodes (mode 2) are dropped together with links from them;
 * notes are ignored. Each entry gets `_meta.title`.
 */

import { widgetValuesByName } from './specs.js';
import { typesMatch } from './types.js';

export const MODE_ALWAYS = 0;
export const MODE_NEVER = 2;
export const MODE_BYPASS = 4;
export const VIRTUAL_TYPES = new Set(['Reroute', 'PrimitiveNode', 'Note', 'MarkdownNote']);

/** Normalise a link (array or object form) to `{id, from, fromSlot, to, toSlot, type}`. */
export function linkRecord(link) {
  if (Array.isArray(link)) {
    const [id, from, fromSlot, to, toSlot, type] = link;
    return { id, from, fromSlot, to, toSlot, type };
  }
  return {
    id: link.id, from: link.origin_id, fromSlot: link.origin_slot,
    to: link.target_id, toSlot: link.target_slot, type: link.type,
  };
}

/** Index a UI document: `{nodes: Map(id -> node), links: Map(id -> record)}`. */
export function indexWorkflow(doc) {
  const nodes = new Map((doc.nodes ?? []).map((n) => [String(n.id), n]));
  const links = new Map((doc.links ?? []).map((l) => {
    const r = linkRecord(l);
    return [String(r.id), r];
  }));
  return { nodes, links };
}

function bypassInputFor(node, slot, type) {
  const inputs = node.inputs ?? [];
  const same = inputs[slot];
  if (same && same.link != null && typesMatch(type, same.type)) return same;
  return inputs.find((inp) => inp.link != null && typesMatch(type, inp.type)) ?? null;
}

/**
 * Follow a link back to a real producer. Returns `{node, slot}` for a real
 * node output, `{value}` for a PrimitiveNode constant, or null (dropped).
 */
export function resolveSource(index, linkId, seen = new Set()) {
  const link = index.links.get(String(linkId));
  if (!link || seen.has(String(linkId))) return null;
  seen.add(String(linkId));
  const node = index.nodes.get(String(link.from));
  if (!node || node.mode === MODE_NEVER) return null;
  if (node.type === 'PrimitiveNode') {
    return { value: (node.widgets_values ?? [])[0] };
  }
  if (node.type === 'Reroute') {
    const inp = (node.inputs ?? [])[0];
    return inp && inp.link != null ? resolveSource(index, inp.link, seen) : null;
  }
  if (node.mode === MODE_BYPASS) {
    const inp = bypassInputFor(node, link.fromSlot, link.type ?? node.outputs?.[link.fromSlot]?.type);
    return inp ? resolveSource(index, inp.link, seen) : null;
  }
  return { node, slot: link.fromSlot };
}

function isExecutable(node, objectInfo) {
  if (VIRTUAL_TYPES.has(node.type) && !objectInfo[node.type]) return false;
  return node.mode !== MODE_NEVER && node.mode !== MODE_BYPASS;
}

/** The API inputs of one node (widget constants, then links). */
export function nodeInputs(node, def, index) {
  const { values } = def ? widgetValuesByName(def, node.widgets_values) : { values: {} };
  const inputs = { ...values };
  for (const inp of node.inputs ?? []) {
    if (inp.link == null) continue;
    const src = resolveSource(index, inp.link);
    if (!src) {
      if (!inp.widget) delete inputs[inp.name];
    } else if ('value' in src) {
      inputs[inp.name] = src.value;
    } else {
      inputs[inp.name] = [String(src.node.id), src.slot];
    }
  }
  return inputs;
}

/**
 * Convert a UI workflow document to an API prompt.
 * @param doc UI-format workflow (`{nodes, links, ...}`)
 * @param objectInfo the `/object_info` map (class name -> definition)
 */
export function uiToApi(doc, objectInfo) {
  const index = indexWorkflow(doc);
  const prompt = {};
  const ordered = [...index.nodes.values()].sort((a, b) => (a.order ?? 0) - (b.order ?? 0));
  for (const node of ordered) {
    if (!isExecutable(node, objectInfo)) continue;
    const def = objectInfo[node.type];
    prompt[String(node.id)] = {
      inputs: nodeInputs(node, def, index),
      class_type: node.type,
      _meta: { title: node.title ?? def?.display_name ?? node.type },
    };
  }
  return prompt;
}
