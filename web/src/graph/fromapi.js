/**
 * API-format prompt -> UI workflow (for PNGs that carry only a `prompt`):
 * nodes built from their definitions, constants set on widgets, links
 * connected, and nodes laid out in columns by dependency depth.
 */

import { emptyWorkflow, addNode, connect, nodeFromDef, getNode } from './doc.js';
import { widgetValuesFromNames, describeNode } from './specs.js';

const isLink = (v) => Array.isArray(v) && v.length === 2 && typeof v[1] === 'number';

function depths(prompt) {
  const memo = {};
  const depth = (id, seen = new Set()) => {
    if (id in memo) return memo[id];
    if (seen.has(id) || !prompt[id]) return 0;
    seen.add(id);
    const ups = Object.values(prompt[id].inputs ?? {}).filter(isLink).map((v) => depth(String(v[0]), seen) + 1);
    memo[id] = Math.max(0, ...ups);
    return memo[id];
  };
  for (const id of Object.keys(prompt)) depth(id);
  return memo;
}

/** Build a UI document from an API prompt; unknown classes raise an error. */
export function apiToUi(prompt, objectInfo) {
  let doc = emptyWorkflow();
  const idMap = {};
  const depth = depths(prompt);
  const rows = {};
  for (const [apiId, entry] of Object.entries(prompt)) {
    const def = objectInfo[entry.class_type];
    if (!def) throw new Error(`unknown node type ${entry.class_type} (node ${apiId})`);
    const col = depth[apiId] ?? 0;
    rows[col] = (rows[col] ?? 0) + 1;
    const node = nodeFromDef(entry.class_type, def, 0, [col * 380, (rows[col] - 1) * 260]);
    const constants = Object.fromEntries(Object.entries(entry.inputs ?? {}).filter(([, v]) => !isLink(v)));
    node.widgets_values = widgetValuesFromNames(def, constants, {});
    if (entry._meta?.title && entry._meta.title !== def.display_name) node.title = entry._meta.title;
    const r = addNode(doc, node);
    doc = r.doc;
    idMap[apiId] = r.id;
  }
  for (const [apiId, entry] of Object.entries(prompt)) {
    for (const [name, v] of Object.entries(entry.inputs ?? {})) {
      if (!isLink(v) || !(String(v[0]) in idMap)) continue;
      const to = getNode(doc, idMap[apiId]);
      let slot = to.inputs.findIndex((i) => i.name === name);
      if (slot < 0) {
        // A widget fed by a link: add the converted-widget input ComfyUI uses.
        const w = describeNode(objectInfo[entry.class_type]).widgets.find((x) => x.name === name);
        if (!w) continue;
        to.inputs.push({ name, type: w.type, link: null, widget: { name } });
        slot = to.inputs.length - 1;
      }
      doc = connect(doc, idMap[String(v[0])], v[1], idMap[apiId], slot);
    }
  }
  return doc;
}
