import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseNumber } from '../src/ui/widgets.js';
import { widgetFor } from '../src/graph/specs.js';

test('number widgets clamp and round to their spec', () => {
  const int = widgetFor('width', ['INT', { default: 512, min: 16, max: 16384, step: 8 }]);
  assert.equal(normaliseNumber(int, 3.6), 16);
  assert.equal(normaliseNumber(int, 99999), 16384);
  assert.equal(normaliseNumber(int, 100.4), 100);
  const cfg = widgetFor('cfg', ['FLOAT', { default: 8, min: 0, max: 100, step: 0.1, round: 0.01 }]);
  assert.equal(normaliseNumber(cfg, 7.456), 7.46);
  assert.equal(normaliseNumber(cfg, 'abc'), 8);
  const den = widgetFor('denoise', ['FLOAT', { default: 1, min: 0, max: 1, step: 0.01 }]);
  assert.equal(normaliseNumber(den, 0.123456), 0.12);
});

test('widget kinds follow the input spec', () => {
  assert.equal(widgetFor('text', ['STRING', { multiline: true }]).kind, 'multiline');
  assert.equal(widgetFor('name', ['STRING', {}]).kind, 'text');
  assert.equal(widgetFor('flag', ['BOOLEAN', { default: true }]).kind, 'toggle');
  assert.equal(widgetFor('model', ['MODEL']), null);
  assert.equal(widgetFor('n', ['INT', { forceInput: true }]), null);
  assert.deepEqual(widgetFor('m', ['COMBO', { options: ['a', 'b'] }]).values, ['a', 'b']);
  assert.equal(widgetFor('noise_seed', ['INT', {}]).control, true);
  assert.equal(widgetFor('steps', ['INT', {}]).control, false);
  assert.equal(widgetFor('image', [['x.png'], { image_upload: true }]).upload, true);
});
