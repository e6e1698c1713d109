/**
 * Node definitions (`/object_info` entries) turned into plain descriptions of
 * sockets and widgets, and the mapping between a node's `widgets_values`
 * array and its input names.
 *
 * ComfyUI's rules followed here: an input is a widget when its type is a
 * combo list, `COMBO`, INT, FLOAT, STRING or BOOLEAN (unless `forceInput`);
 * widgets appear in `input_order` (required, then optional); a seed-like INT
 * (`seed`, `noise_seed`, or `control_after_generate: true`) is followed by an
 * extra "control_after_generate" value in `widgets_values`; LoadImage's
 * `image_upload` combo is followed by its upload button's value ("image").
 *
 * The schema API's dynamic inputs are grown here from their entries, as ComfyUI's frontend
 * does: an Autogrow (`COMFY_AUTOGROW_V3` with its `template`) becomes the sockets
 * `<id>.<name>` (the first `min` required), a DynamicCombo (`COMFY_DYNAMICCOMBO_V3` with its
 * `options`) a combo of the option keys plus `<id>.<input>` for every option's inputs; a
 * MatchType socket (`COMFY_MATCHTYPE_V3`) takes its template's allowed types, and
 * `resolveMatchTypes` gives every socket of a template the type connected to one of them.
 */

export const WIDGET_TYPES = new Set(['INT', 'FLOAT', 'STRING', 'BOOLEAN', 'COMBO']);
export const AUTOGROW = 'COMFY_AUTOGROW_V3';
export const DYNAMIC_COMBO = 'COMFY_DYNAMICCOMBO_V3';
export const MATCH_TYPE = 'COMFY_MATCHTYPE_V3';
export const CONTROL_VALUES = ['fixed', 'increment', 'decrement', 'randomize'];
const SEED_NAMES = new Set(['seed', 'noise_seed']);

/** The `[name, spec, optional]` entries of an input dict (`{required: {...}, optional: {...}}`). */
function sectionEntries(inputs) {
  const out = [];
  for (const section of ['required', 'optional']) {
    for (const [name, spec] of Object.entries(inputs?.[section] ?? {})) out.push([name, spec, section === 'optional']);
  }
  return out;
}

/** The inputs one entry stands for: itself, or the sockets of a dynamic input (ids `<id>.<name>`). */
export function expandInput(name, spec, optional) {
  const [type, opts = {}] = spec;
  if (type === AUTOGROW) {
    const t = opts.template ?? {};
    const names = t.names ?? Array.from({ length: t.max ?? 0 }, (_, i) => `${t.prefix ?? ''}${i}`);
    const [, entry, templateOptional] = sectionEntries(t.input)[0] ?? [];
    if (!entry) return [];
    return names.flatMap((n, i) => expandInput(`${name}.${n}`, entry,
      optional || templateOptional || i >= (t.min ?? 0)));
  }
  if (type === DYNAMIC_COMBO) {
    const { options = [], ...rest } = opts;
    const keys = options.map((o) => o.key);
    const out = [{ name, spec: [keys, { ...rest, default: keys[0] }], optional }];
    const seen = new Set();
    for (const option of options) {
      for (const [sub, subSpec] of sectionEntries(option.inputs)) {
        if (seen.has(sub)) continue;
        seen.add(sub);
        out.push(...expandInput(`${name}.${sub}`, subSpec, true));
      }
    }
    return out;
  }
  return [{ name, spec, optional }];
}

/** Input names of a definition in order: required, optional (hidden excluded); dynamic inputs
 * grown into their sockets, those that are optional after the required ones (as the server lists them). */
export function orderedInputs(def) {
  const order = def.input_order ?? {};
  const required = [];
  const optional = [];
  for (const section of ['required', 'optional']) {
    const specs = def.input?.[section] ?? {};
    const names = order[section] ?? Object.keys(specs);
    for (const name of names) {
      if (!specs[name]) continue;
      for (const item of expandInput(name, specs[name], section === 'optional')) {
        (item.optional ? optional : required).push(item);
      }
    }
  }
  return [...required, ...optional];
}

/** The socket type of an input spec (`COMBO` for a list of choices, a MatchType's allowed types). */
export function specType(spec) {
  const t = spec?.[0];
  if (t === MATCH_TYPE) return spec[1]?.template?.allowed_types || '*';
  return Array.isArray(t) ? 'COMBO' : String(t);
}

/** Plain description of the widget for an input spec, or null for a socket. */
export function widgetFor(name, spec) {
  const [type, opts = {}] = spec;
  if (opts.forceInput) return null;
  if (Array.isArray(type) || type === 'COMBO') {
    const values = Array.isArray(type) ? type : (opts.options ?? []);
    return {
      name, kind: 'combo', values,
      default: opts.default ?? values[0] ?? '',
      upload: Boolean(opts.image_upload),
    };
  }
  if (type === 'INT') {
    const control = Boolean(opts.control_after_generate) ||
      (SEED_NAMES.has(name) && opts.control_after_generate !== false);
    return {
      name, kind: 'number', integer: true, default: opts.default ?? 0,
      min: opts.min ?? -Number.MAX_SAFE_INTEGER, max: opts.max ?? Number.MAX_SAFE_INTEGER,
      step: opts.step ?? 1, control,
    };
  }
  if (type === 'FLOAT') {
    const step = opts.step ?? 0.1;
    return {
      name, kind: 'number', integer: false, default: opts.default ?? 0,
      min: opts.min ?? -Infinity, max: opts.max ?? Infinity, step,
      round: opts.round ?? step, control: false,
    };
  }
  if (type === 'STRING') {
    return { name, kind: opts.multiline ? 'multiline' : 'text', default: opts.default ?? '' };
  }
  if (type === 'BOOLEAN') {
    return {
      name, kind: 'toggle', default: opts.default ?? false,
      labelOn: opts.label_on, labelOff: opts.label_off,
    };
  }
  return null;
}

/** Split a definition into `{sockets, widgets, outputs}` plain descriptions. */
export function describeNode(def) {
  const sockets = [];
  const widgets = [];
  const allowed = {};
  for (const { name, spec, optional } of orderedInputs(def)) {
    const w = widgetFor(name, spec);
    const tooltip = spec[1]?.tooltip;
    if (w) widgets.push({ ...w, tooltip, optional, type: specType(spec) });
    const template = matchTemplate(spec);
    if (!w) sockets.push({ name, type: specType(spec), tooltip, optional, ...(template ? { template } : {}) });
    if (template) allowed[template] = specType(spec);
  }
  const outputs = (def.output ?? []).map((type, i) => {
    const template = def.output_matchtypes?.[i];
    return {
      name: def.output_name?.[i] ?? type,
      type: template ? (allowed[template] ?? '*') : Array.isArray(type) ? 'COMBO' : type,
      isList: Boolean(def.output_is_list?.[i]),
      tooltip: def.output_tooltips?.[i],
      ...(template ? { template } : {}),
    };
  });
  return { sockets, widgets, outputs };
}

function matchTemplate(spec) {
  return spec?.[0] === MATCH_TYPE ? spec[1]?.template?.template_id : undefined;
}

/**
 * The socket types of a node with MatchType sockets, given the type linked into each input
 * (`connected[name]`, absent when unlinked): every input and output of a template takes the type
 * of the first linked input of that template, or its allowed types while none is linked.
 */
export function resolveMatchTypes(desc, connected) {
  const chosen = {};
  for (const s of desc.sockets) {
    if (s.template && connected[s.name] && chosen[s.template] === undefined) chosen[s.template] = connected[s.name];
  }
  return {
    inputs: desc.sockets.map((s) => (s.template ? chosen[s.template] ?? s.type : s.type)),
    outputs: desc.outputs.map((o) => (o.template ? chosen[o.template] ?? o.type : o.type)),
  };
}

/** The default `widgets_values` array for a definition. */
export function defaultWidgetValues(def) {
  const out = [];
  for (const w of describeNode(def).widgets) {
    out.push(w.default);
    if (w.control) out.push('randomize');
    if (w.upload) out.push('image');
  }
  return out;
}

/**
 * Map a node's `widgets_values` to `{inputName: value}` using its definition.
 * Also returns the seed controls found: `{values, controls: {name: mode}}`.
 * A dict-shaped `widgets_values` (some custom nodes) is taken by name.
 */
export function widgetValuesByName(def, widgetsValues) {
  const values = {};
  const controls = {};
  if (widgetsValues && !Array.isArray(widgetsValues)) {
    return { values: { ...widgetsValues }, controls };
  }
  const list = widgetsValues ?? [];
  let i = 0;
  for (const w of describeNode(def).widgets) {
    if (i >= list.length) break;
    values[w.name] = list[i++];
    if (w.control && isControlValue(list[i])) controls[w.name] = controlMode(list[i++]);
    if (w.upload && list[i] === 'image') i++;
  }
  return { values, controls };
}

/**
 * A seed's saved control value: a mode name, or in the oldest saves a boolean ("randomize after
 * every generation" on or off). Saves made before seeds had a control value have none at all.
 */
export function isControlValue(value) {
  return typeof value === 'boolean' || CONTROL_VALUES.includes(value);
}

/** The control mode a saved control value stands for. */
export function controlMode(value) {
  if (typeof value === 'boolean') return value ? 'randomize' : 'fixed';
  return value;
}

/** Inverse of widgetValuesByName: build `widgets_values` from names. */
export function widgetValuesFromNames(def, values, controls = {}) {
  const out = [];
  for (const w of describeNode(def).widgets) {
    out.push(w.name in values ? values[w.name] : w.default);
    if (w.control) out.push(controls[w.name] ?? 'randomize');
    if (w.upload) out.push('image');
  }
  return out;
}
