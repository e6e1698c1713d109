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
 */

export const WIDGET_TYPES = new Set(['INT', 'FLOAT', 'STRING', 'BOOLEAN', 'COMBO']);
export const CONTROL_VALUES = ['fixed', 'increment', 'decrement', 'randomize'];
const SEED_NAMES = new Set(['seed', 'noise_seed']);

/** Input names of a definition in order: required, optional (hidden excluded). */
export function orderedInputs(def) {
  const order = def.input_order ?? {};
  const out = [];
  for (const section of ['required', 'optional']) {
    const specs = def.input?.[section] ?? {};
    const names = order[section] ?? Object.keys(specs);
    for (const name of names) {
      if (specs[name]) out.push({ name, spec: specs[name], optional: section === 'optional' });
    }
  }
  return out;
}

/** The socket type of an input spec (`COMBO` for a list of choices). */
export function specType(spec) {
  const t = spec?.[0];
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
  for (const { name, spec, optional } of orderedInputs(def)) {
    const w = widgetFor(name, spec);
    const tooltip = spec[1]?.tooltip;
    if (w) widgets.push({ ...w, tooltip, optional, type: specType(spec) });
    else sockets.push({ name, type: specType(spec), tooltip, optional });
  }
  const outputs = (def.output ?? []).map((type, i) => ({
    name: def.output_name?.[i] ?? type,
    type: Array.isArray(type) ? 'COMBO' : type,
    isList: Boolean(def.output_is_list?.[i]),
    tooltip: def.output_tooltips?.[i],
  }));
  return { sockets, widgets, outputs };
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
