import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeNode, orderedInputs, resolveMatchTypes, widgetValuesByName } from '../src/graph/specs.js';
import { typesMatch } from '../src/graph/types.js';

// /object_info entries exactly as ComfyUI (and Loom's server) list the schema API's dynamic types.
const GROW = {
  input: {
    required: {
      values: ['COMFY_AUTOGROW_V3', { template: { input: { required: { v: ['INT', { forceInput: true }] } },
        prefix: 'v', min: 1, max: 3 } }],
      mode: ['COMFY_DYNAMICCOMBO_V3', { options: [
        { key: 'scale', inputs: { required: { factor: ['INT', { default: 2 }] } } },
        { key: 'offset', inputs: { required: { amount: ['INT', { default: 1 }] } } }] }],
    },
  },
  input_order: { required: ['values', 'mode'] },
  output: ['INT'],
  output_name: ['INT'],
};

const SWITCH = {
  input: {
    required: {
      on_true: ['COMFY_MATCHTYPE_V3', { template: { template_id: 'T', allowed_types: 'IMAGE,MASK' } }],
      on_false: ['COMFY_MATCHTYPE_V3', { template: { template_id: 'T', allowed_types: 'IMAGE,MASK' } }],
      flag: ['BOOLEAN', { default: true }],
    },
  },
  input_order: { required: ['on_true', 'on_false', 'flag'] },
  output: ['COMFY_MATCHTYPE_V3', 'INT'],
  output_name: ['MATCHTYPE', 'INT'],
  output_matchtypes: ['T', null],
};

test('autogrow and dynamic combo entries grow into the dotted sockets the server validates', () => {
  const items = orderedInputs(GROW).map((i) => [i.name, i.optional]);
  assert.deepEqual(items, [['values.v0', false], ['mode', false], ['values.v1', true], ['values.v2', true],
    ['mode.factor', true], ['mode.amount', true]]);
  const d = describeNode(GROW);
  assert.deepEqual(d.sockets.map((s) => s.name), ['values.v0', 'values.v1', 'values.v2']);
  assert.deepEqual(d.widgets.map((w) => w.name), ['mode', 'mode.factor', 'mode.amount']);
  assert.deepEqual(d.widgets[0].values, ['scale', 'offset']);
  assert.equal(d.widgets[0].default, 'scale');
  assert.deepEqual(widgetValuesByName(GROW, ['offset', 2, 5]).values, { mode: 'offset', 'mode.factor': 2, 'mode.amount': 5 });
});

test('matchtype sockets take the allowed types, then the type linked into the template', () => {
  const d = describeNode(SWITCH);
  assert.deepEqual(d.sockets.map((s) => [s.type, s.template]), [['IMAGE,MASK', 'T'], ['IMAGE,MASK', 'T']]);
  assert.deepEqual(d.outputs.map((o) => o.type), ['IMAGE,MASK', 'INT']);
  assert.ok(typesMatch('MASK', d.sockets[0].type) && !typesMatch('LATENT', d.sockets[0].type));
  assert.deepEqual(resolveMatchTypes(d, {}), { inputs: ['IMAGE,MASK', 'IMAGE,MASK'], outputs: ['IMAGE,MASK', 'INT'] });
  assert.deepEqual(resolveMatchTypes(d, { on_false: 'MASK' }), { inputs: ['MASK', 'MASK'], outputs: ['MASK', 'INT'] });
});
