import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readPngTextChunks, workflowFromPng, isPng } from '../src/graph/png.js';

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  new DataView(out.buffer).setUint32(0, data.length);
  out.set([...type].map((c) => c.charCodeAt(0)), 4);
  out.set(data, 8);
  return out; // CRC left zero: readers of text chunks need not check it
}

function png(chunks) {
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), ...chunks, chunk('IEND', new Uint8Array())];
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out.buffer;
}

const enc = (s) => new TextEncoder().encode(s);
const tEXt = (k, v) => chunk('tEXt', new Uint8Array([...enc(k), 0, ...enc(v)]));
const iTXt = (k, v) => chunk('iTXt', new Uint8Array([...enc(k), 0, 0, 0, 0, 0, ...enc(v)]));

test('reads tEXt and iTXt chunks', () => {
  const buf = png([chunk('IHDR', new Uint8Array(13)), tEXt('prompt', '{"1":{}}'), iTXt('workflow', '{"nodes":[],"t":"é"}')]);
  assert.ok(isPng(buf));
  const c = readPngTextChunks(buf);
  assert.equal(c.prompt, '{"1":{}}');
  assert.equal(JSON.parse(c.workflow).t, 'é');
});

test('workflow is preferred over prompt', () => {
  assert.deepEqual(workflowFromPng(png([tEXt('prompt', '{"1":{}}'), tEXt('workflow', '{"nodes":[]}')])),
    { workflow: { nodes: [] } });
  assert.deepEqual(workflowFromPng(png([tEXt('prompt', '{"1":{}}')])), { prompt: { 1: {} } });
  assert.equal(workflowFromPng(png([])), null);
  assert.throws(() => readPngTextChunks(new ArrayBuffer(10)), /not a PNG/);
});
