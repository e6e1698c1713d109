/**
 * litegraph node classes built from `/object_info` definitions, and the
 * frontend-only nodes ComfyUI workflows contain (Reroute, PrimitiveNode,
 * Note, MarkdownNote). Also: converting a widget to an input and back.
 */

import { LiteGraph, LGraphNode, RenderShape } from '@comfyorg/litegraph';
import {
  describeNode, CONTROL_VALUES, controlMode, isControlValue, resolveMatchTypes, widgetValuesByName,
} from '../graph/specs.js';
import { addWidgets, showInputPreview } from './widgets.js';
import { addMarkdownWidget } from './markdown_note.js';

/** Hide widget `w` and give the node an input socket for it. */
export function convertWidgetToInput(node, w) {
  w.hidden = true;
  node.addInput(w.name, w.inputType ?? '*', { widget: { name: w.name } });
  node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
}

/** Remove the socket of a converted widget and show the widget again. */
export function convertInputToWidget(node, name) {
  const idx = (node.inputs ?? []).findIndex((i) => i.widget?.name === name);
  if (idx < 0) return;
  if (node.inputs[idx].link != null) node.disconnectInput(idx);
  node.removeInput(idx);
  const w = node.widgets?.find((x) => x.name === name);
  if (w) w.hidden = false;
  node.setSize([node.size[0], node.computeSize()[1]]);
}

/** After loading: widget inputs with a link keep their socket; others become widgets again. */
export function syncConvertedWidgets(node) {
  for (const inp of [...(node.inputs ?? [])]) {
    const w = inp.widget && node.widgets?.find((x) => x.name === inp.widget.name);
    if (!w) continue;
    if (inp.link != null) w.hidden = true;
    else convertInputToWidget(node, inp.widget.name);
  }
}

function widgetMenu(node) {
  const items = [];
  for (const w of node.widgets ?? []) {
    if (!w.desc || w.isControl) continue;
    if (!w.hidden) items.push({ content: `Convert ${w.name} to input`, callback: () => convertWidgetToInput(node, w) });
    else items.push({ content: `Convert ${w.name} to widget`, callback: () => convertInputToWidget(node, w.name) });
  }
  return items;
}

/**
 * Give each widget its saved value by input name, as ComfyUI's frontend does, instead of by position:
 * a seed's control value may be missing (saves from before seeds had one), a boolean (the oldest
 * saves) or a mode name, and positional assignment would shift every later value by one.
 */
export function applyWidgetValues(node, def, widgetsValues) {
  if (widgetsValues == null) return;
  const { values, controls } = widgetValuesByName(def, widgetsValues);
  for (const w of node.widgets ?? []) {
    if (w.isControl) continue;
    if (w.name in values) w.value = values[w.name];
    if (w.linkedControl) w.linkedControl.value = controls[w.name] ?? 'fixed';
  }
}

/** The node class for one definition; extensions see it in beforeRegisterNodeDef. */
export function makeNodeClass(app, name, def) {
  const desc = describeNode(def);
  class LoomNode extends LGraphNode {
    static comfyClass = name;
    static nodeData = def;
    static title = def.display_name || name;
    constructor(title) {
      super(title ?? def.display_name ?? name);
      this.comfyClass = name;
      this.serialize_widgets = true;
      this.description = def.description;
      for (const s of desc.sockets) {
        this.addInput(s.name, s.type, { tooltip: s.tooltip, shape: s.optional ? RenderShape.HollowCircle : undefined });
      }
      for (const o of desc.outputs) {
        this.addOutput(o.name, o.type, { tooltip: o.tooltip, shape: o.isList ? RenderShape.GRID : undefined });
      }
      addWidgets(this, desc, app, (w) => app.onWidgetChanged(this, w));
      const [w, h] = this.computeSize();
      this.size = [Math.max(w, 260), h];
      app.invokeExtensions('nodeCreated', this);
    }
    onConnectionsChange() {
      this.followMatchTypes();
    }
    followMatchTypes() {
      // MatchType sockets (schema API): a template's sockets take the type linked into one of them.
      if (!desc.sockets.some((s) => s.template)) return;
      const connected = {};
      for (const inp of this.inputs ?? []) {
        const link = inp.link != null ? this.graph?.links?.get?.(inp.link) ?? this.graph?.links?.[inp.link] : null;
        if (link?.type && link.type !== '*') connected[inp.name] = link.type;
      }
      const types = resolveMatchTypes(desc, connected);
      desc.sockets.forEach((s, i) => {
        const inp = this.inputs?.find((x) => x.name === s.name);
        if (inp) inp.type = types.inputs[i];
      });
      desc.outputs.forEach((o, i) => { if (this.outputs?.[i]) this.outputs[i].type = types.outputs[i]; });
    }
    onConfigure(info) {
      applyWidgetValues(this, def, info.widgets_values);
      syncConvertedWidgets(this);
      this.followMatchTypes(); // a loaded node's MatchType sockets follow its saved links
      if (this.isImageLoader) showInputPreview(this, this.widgets?.[0]?.value, app);
      super.onConfigure?.(info);
    }
    getExtraMenuOptions(canvas, options) {
      const items = widgetMenu(this);
      if (this.isImageLoader) items.push({ content: 'Open in mask editor', callback: () => app.openMaskEditor(this) });
      if (this.imgs?.length) items.push({ content: 'Open image', callback: () => window.open(this.imgs[0].src, '_blank') });
      // litegraph puts what this returns at the top of the menu; adding to `options` too would show it twice.
      return items;
    }
  }
  return LoomNode;
}

class RerouteNode extends LGraphNode {
  static title = 'Reroute';
  constructor(title) {
    super(title ?? 'Reroute');
    this.addInput('', '*');
    this.addOutput('', '*');
    this.size = [75, 26];
    this.collapsable = false;
    this.isVirtualNode = true;
  }
  onConnectionsChange() {
    // The reroute takes the type of what feeds it, so links stay type-checked.
    const link = this.inputs[0].link != null ? this.graph?.links?.get?.(this.inputs[0].link) ?? this.graph?.links?.[this.inputs[0].link] : null;
    const type = link?.type ?? '*';
    this.outputs[0].type = type;
    this.inputs[0].type = '*';
  }
}

class NoteNode extends LGraphNode {
  static title = 'Note';
  constructor(title) {
    super(title ?? 'Note');
    this.serialize_widgets = true;
    this.isVirtualNode = true;
    this.color = '#432';
    this.bgcolor = '#653';
    addWidgets(this, { widgets: [{ name: 'text', kind: 'multiline', default: '' }] }, null, () => {});
    this.size = [400, 140];
  }
}

/** A note whose text is Markdown, drawn formatted (ComfyUI's MarkdownNote). */
class MarkdownNoteNode extends LGraphNode {
  static title = 'Markdown Note';
  constructor(title) {
    super(title ?? 'Markdown Note');
    this.serialize_widgets = true;
    this.isVirtualNode = true;
    this.color = '#333';
    this.bgcolor = '#2a2a2a';
    addMarkdownWidget(this);
    this.size = [400, 200];
  }
}

class PrimitiveNode extends LGraphNode {
  static title = 'Primitive';
  constructor(title) {
    super(title ?? 'Primitive');
    this.addOutput('connect to widget input', '*');
    this.serialize_widgets = true;
    this.isVirtualNode = true;
  }
  /** Take the widget of the first widget input it is connected to (as ComfyUI does). */
  adoptWidget(target, input) {
    const w = input?.widget && target?.widgets?.find((x) => x.name === input.widget.name);
    if (!w || this.widgets?.length) return;
    Object.assign(this.outputs[0], { type: input.type, name: input.type, widget: { name: w.name } });
    const kind = ['number', 'combo', 'toggle', 'text'].includes(w.type) ? w.type : 'text';
    const own = this.addWidget(kind, 'value', w.value, () => {}, { ...w.options });
    own.desc = w.desc;
    if (w.linkedControl) {
      own.linkedControl = this.addWidget('combo', 'control_after_generate', 'fixed', () => {}, { values: CONTROL_VALUES });
    }
    this.title = w.name;
    this.setSize(this.computeSize());
  }
  onConnectionsChange(type, index, connected, link) {
    if (type !== 2 || !connected || !link || !this.graph) return;
    const target = this.graph.getNodeById(link.target_id);
    this.adoptWidget(target, target?.inputs?.[link.target_slot]);
  }
  onConfigure(info) {
    // Rebuild the value widget from the stored values so they stay editable.
    if (this.widgets?.length || !info.widgets_values?.length) return;
    const [v, control] = info.widgets_values;
    const kind = typeof v === 'number' ? 'number' : typeof v === 'boolean' ? 'toggle' : 'text';
    const own = this.addWidget(kind, 'value', v, () => {}, {});
    if (kind === 'number' && isControlValue(control)) {
      own.linkedControl = this.addWidget('combo', 'control_after_generate', controlMode(control), () => {},
        { values: CONTROL_VALUES });
    }
  }
}

/** Register the frontend-only node types. */
export function registerVirtualNodes() {
  LiteGraph.registerNodeType('Reroute', RerouteNode);
  LiteGraph.registerNodeType('Note', NoteNode);
  LiteGraph.registerNodeType('MarkdownNote', MarkdownNoteNode);
  LiteGraph.registerNodeType('PrimitiveNode', PrimitiveNode);
  for (const t of ['Reroute', 'Note', 'MarkdownNote', 'PrimitiveNode']) LiteGraph.registered_node_types[t].category = 'utils';
}
