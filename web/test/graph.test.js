import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OBJECT_INFO } from './object_info_fixture.js';
import { typesMatch } from '../src/graph/types.js';
import { searchNodeDefs, categoryTree, fuzzyScore } from '../src/graph/fuzzy.js';
import {
  describeNode, defaultWidgetValues, widgetValuesByName, widgetValuesFromNames,
} from '../src/graph/specs.js';
import { nextSeed } from '../src/graph/seed.js';
import {
  emptyWorkflow, addNode, connect, disconnect, removeNode, nodeFromDef, setWidgetValue, getNode,
} from '../src/graph/doc.js';
import { uiToApi } from '../src/graph/toapi.js';
import { defaultWorkflow } from '../src/graph/defaults.js';
import { createHistory, record, undo, redo, current } from '../src/graph/history.js';
import { marksFromPromptError, marksFromExecutionError } from '../src/graph/errors.js';
import { parseBinaryFrame } from '../src/graph/frames.js';

test('type matching handles wildcards and unions', () => {
  assert.ok(typesMatch('MODEL', 'MODEL'));
  assert.ok(!typesMatch('MODEL', 'CLIP'));
  assert.ok(typesMatch('*', 'CLIP'));
  assert.ok(typesMatch('LATENT', '*'));
  assert.ok(typesMatch('INT', 'FLOAT,INT'));
  assert.ok(typesMatch('IMAGE,MASK', 'MASK'));
  assert.ok(!typesMatch('IMAGE,MASK', 'LATENT,INT'));
  assert.ok(typesMatch('', 'IMAGE'));
});

test('fuzzy search ranks by name, display name and category', () => {
  const names = searchNodeDefs(OBJECT_INFO, 'ksam').map((r) => r.name);
  assert.equal(names[0], 'KSampler');
  assert.equal(searchNodeDefs(OBJECT_INFO, 'load checkpoint')[0].name, 'CheckpointLoaderSimple');
  assert.ok(searchNodeDefs(OBJECT_INFO, 'upscaling').some((r) => r.name === 'ImageScale'));
  assert.equal(fuzzyScore('zzz', 'KSampler'), -Infinity);
  assert.deepEqual(categoryTree(OBJECT_INFO).sub.image.sub.upscaling.nodes, ['ImageScale']);
});

test('node descriptions split sockets and widgets in input_order', () => {
  const d = describeNode(OBJECT_INFO.KSampler);
  assert.deepEqual(d.sockets.map((s) => s.name), ['model', 'positive', 'negative', 'latent_image']);
  assert.deepEqual(d.widgets.map((w) => w.name),
    ['seed', 'steps', 'cfg', 'sampler_name', 'scheduler', 'denoise']);
  assert.ok(d.widgets[0].control);
  assert.equal(describeNode(OBJECT_INFO.CLIPTextEncode).widgets[0].kind, 'multiline');
  assert.deepEqual(defaultWidgetValues(OBJECT_INFO.KSampler),
    [0, 'randomize', 20, 8, 'euler', 'normal', 1]);
  assert.deepEqual(defaultWidgetValues(OBJECT_INFO.LoadImage), ['x.png', 'image']);
});

test('widget values map to names and back, skipping control values', () => {
  const wv = [42, 'fixed', 30, 7.5, 'euler_ancestral', 'karras', 0.5];
  const { values, controls } = widgetValuesByName(OBJECT_INFO.KSampler, wv);
  assert.deepEqual(values, { seed: 42, steps: 30, cfg: 7.5, sampler_name: 'euler_ancestral',
    scheduler: 'karras', denoise: 0.5 });
  assert.deepEqual(controls, { seed: 'fixed' });
  assert.deepEqual(widgetValuesFromNames(OBJECT_INFO.KSampler, values, controls), wv);
  // Old workflows without the control value still map correctly.
  const old = widgetValuesByName(OBJECT_INFO.KSampler, [42, 30, 7.5, 'euler', 'normal', 1]);
  assert.equal(old.values.steps, 30);
  assert.equal(old.values.denoise, 1);
});

test('seed control after generate', () => {
  assert.equal(nextSeed(5, 'fixed'), 5);
  assert.equal(nextSeed(5, 'increment'), 6);
  assert.equal(nextSeed(5, 'decrement'), 4);
  assert.equal(nextSeed(0, 'decrement', { min: 0, max: 10 }), 10);
  assert.equal(nextSeed(5, 'randomize', { min: 0, max: 100 }, () => 0.5), 50);
  const r = nextSeed(5, 'randomize', { min: 0, max: 0xffffffffffffffff });
  assert.ok(Number.isSafeInteger(r) && r >= 0);
});

test('document edits are pure and keep links consistent', () => {
  const e = emptyWorkflow();
  const a = addNode(e, nodeFromDef('CheckpointLoaderSimple', OBJECT_INFO.CheckpointLoaderSimple, 0));
  const b = addNode(a.doc, nodeFromDef('KSampler', OBJECT_INFO.KSampler, 0));
  assert.equal(e.nodes.length, 0);
  let doc = connect(b.doc, a.id, 0, b.id, 0);
  assert.deepEqual(doc.links, [[1, 1, 0, 2, 0, 'MODEL']]);
  assert.equal(getNode(doc, 2).inputs[0].link, 1);
  assert.throws(() => connect(doc, a.id, 1, b.id, 0), /cannot connect CLIP to MODEL/);
  const again = connect(doc, a.id, 0, b.id, 0);
  assert.equal(again.links.length, 1, 'reconnecting replaces the old link');
  assert.deepEqual(getNode(again, 1).outputs[0].links, [2]);
  const cut = disconnect(doc, b.id, 0);
  assert.equal(cut.links.length, 0);
  assert.equal(getNode(cut, 2).inputs[0].link, null);
  const gone = removeNode(doc, a.id);
  assert.equal(gone.nodes.length, 1);
  assert.equal(gone.links.length, 0);
  assert.equal(getNode(gone, 2).inputs[0].link, null);
  const set = setWidgetValue(doc, b.id, 2, 33);
  assert.equal(getNode(set, 2).widgets_values[2], 33);
  assert.equal(getNode(doc, 2).widgets_values[2], 20);
});

test('the default workflow converts to the ComfyUI API prompt', () => {
  const prompt = uiToApi(defaultWorkflow('a.safetensors'), OBJECT_INFO);
  assert.deepEqual(Object.keys(prompt).sort(), ['1', '2', '3', '4', '5', '6', '7']);
  assert.deepEqual(prompt['5'].inputs, {
    seed: 156680208700286, steps: 20, cfg: 8, sampler_name: 'euler', scheduler: 'normal',
    denoise: 1, model: ['1', 0], positive: ['2', 0], negative: ['3', 0], latent_image: ['4', 0],
  });
  assert.deepEqual(prompt['1'].inputs, { ckpt_name: 'a.safetensors' });
  assert.deepEqual(prompt['7'].inputs, { filename_prefix: 'ComfyUI', images: ['6', 0] });
  assert.equal(prompt['2']._meta.title, 'CLIP Text Encode (Positive Prompt)');
  assert.equal(prompt['4'].class_type, 'EmptyLatentImage');
});

test('reroutes, primitives, muted and bypassed nodes convert like ComfyUI', () => {
  let doc = defaultWorkflow('a.safetensors');
  // Reroute between the decoder and the saver.
  let r = addNode(doc, { type: 'Reroute', pos: [0, 0], mode: 0,
    inputs: [{ name: '', type: '*', link: null }], outputs: [{ name: '', type: '*', links: [] }] });
  doc = connect(r.doc, 6, 0, r.id, 0);
  doc = connect(doc, r.id, 0, 7, 0);
  // An ImageScale that is bypassed between reroute and a second saver.
  const s = addNode(doc, { ...nodeFromDef('ImageScale', OBJECT_INFO.ImageScale, 0), mode: 4 });
  doc = connect(s.doc, r.id, 0, s.id, 0);
  const save2 = addNode(doc, nodeFromDef('SaveImage', OBJECT_INFO.SaveImage, 0));
  doc = connect(save2.doc, s.id, 0, save2.id, 0);
  // A primitive driving the steps widget converted to an input.
  const p = addNode(doc, { type: 'PrimitiveNode', mode: 0, inputs: [],
    outputs: [{ name: 'INT', type: 'INT', links: [], widget: { name: 'steps' } }],
    widgets_values: [7, 'fixed'] });
  doc = p.doc;
  const ks = getNode(doc, 5);
  ks.inputs.push({ name: 'steps', type: 'INT', link: null, widget: { name: 'steps' } });
  doc = connect(doc, p.id, 0, 5, 4);
  // A muted note-like node and a note are dropped.
  doc = addNode(doc, { ...nodeFromDef('SaveImage', OBJECT_INFO.SaveImage, 0), mode: 2 }).doc;
  doc = addNode(doc, { type: 'Note', mode: 0, widgets_values: ['hi'] }).doc;
  const prompt = uiToApi(doc, OBJECT_INFO);
  assert.deepEqual(prompt['7'].inputs.images, ['6', 0]);
  assert.equal(prompt[String(s.id)], undefined, 'bypassed node is not sent');
  assert.deepEqual(prompt[String(save2.id)].inputs.images, ['6', 0], 'bypass passes through');
  assert.equal(prompt['5'].inputs.steps, 7);
  assert.equal(Object.values(prompt).filter((n) => n.class_type === 'SaveImage').length, 2);
  assert.ok(!Object.values(prompt).some((n) => ['Note', 'Reroute', 'PrimitiveNode'].includes(n.class_type)));
});

test('links from a muted node are dropped', () => {
  let doc = defaultWorkflow('a.safetensors');
  doc.nodes.find((n) => n.id === 6).mode = 2;
  const prompt = uiToApi(doc, OBJECT_INFO);
  assert.equal(prompt['6'], undefined);
  assert.equal(prompt['7'].inputs.images, undefined);
});

test('ComfyUI default workflow file converts', (t) => {
  const path = fileURLToPath(new URL('../../../shared/workflows/default_sd15_ui.json', import.meta.url));
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    t.skip('shared workflows not present');
    return;
  }
  const prompt = uiToApi(JSON.parse(text), OBJECT_INFO);
  assert.deepEqual(Object.keys(prompt).sort(), ['3', '4', '5', '6', '7', '8', '9']);
  assert.equal(prompt['3'].inputs.seed, 685468484323813);
  assert.deepEqual(prompt['3'].inputs.latent_image, ['5', 0]);
  assert.equal(prompt['9'].inputs.filename_prefix, 'SD1.5');
});

test('undo and redo over snapshots', () => {
  let h = createHistory({ n: 1 });
  h = record(h, { n: 2 });
  h = record(h, { n: 2 });
  h = record(h, { n: 3 });
  assert.equal(h.past.length, 2);
  h = undo(h);
  assert.deepEqual(current(h), { n: 2 });
  h = undo(h);
  assert.deepEqual(current(h), { n: 1 });
  assert.deepEqual(current(undo(h)), { n: 1 });
  h = redo(h);
  assert.deepEqual(current(h), { n: 2 });
  h = record(h, { n: 9 });
  assert.equal(h.future.length, 0);
});

test('server errors become per-node marks', () => {
  const m = marksFromPromptError({
    error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation', details: '' },
    node_errors: { 5: { errors: [{ type: 'value_bigger_than_max', message: 'Value bigger than max',
      details: 'steps 20000 > 10000', extra_info: { input_name: 'steps' } }], class_type: 'KSampler' } },
  });
  assert.equal(m.message, 'Prompt outputs failed validation');
  assert.deepEqual(m.nodes['5'].inputs, ['steps']);
  assert.match(m.nodes['5'].messages[0], /steps 20000/);
  const x = marksFromExecutionError({ node_id: '3', node_type: 'KSampler', exception_type: 'RuntimeError', exception_message: 'boom' });
  assert.deepEqual(x.nodes['3'].messages, ['RuntimeError: boom']);
});

test('binary preview frames decode', () => {
  const buf = new ArrayBuffer(11);
  const v = new DataView(buf);
  v.setUint32(0, 1);
  v.setUint32(4, 2);
  new Uint8Array(buf).set([9, 8, 7], 8);
  const f = parseBinaryFrame(buf);
  assert.equal(f.mime, 'image/png');
  assert.deepEqual([...f.bytes], [9, 8, 7]);
});

test('an API prompt rebuilds into a UI graph that converts back', async () => {
  const { apiToUi } = await import('../src/graph/fromapi.js');
  const prompt = uiToApi(defaultWorkflow('b.safetensors'), OBJECT_INFO);
  const doc = apiToUi(prompt, OBJECT_INFO);
  assert.equal(doc.nodes.length, 7);
  assert.equal(doc.links.length, 9);
  const back = uiToApi(doc, OBJECT_INFO);
  const strip = (p) => Object.values(p).map((n) => [n.class_type, n.inputs]).sort((a, b) =>
    JSON.stringify(a).localeCompare(JSON.stringify(b)));
  assert.deepEqual(strip(back).map((x) => x[0]), strip(prompt).map((x) => x[0]));
  const ks = Object.values(back).find((n) => n.class_type === 'KSampler');
  assert.equal(ks.inputs.seed, 156680208700286);
  assert.equal(ks.inputs.model.length, 2);
});

test('deprecated nodes rank below the others', () => {
  const defs = {
    CheckpointLoader: { display_name: 'Load Checkpoint With Config (DEPRECATED)', category: 'advanced/loaders', deprecated: true },
    CheckpointLoaderSimple: { display_name: 'Load Checkpoint', category: 'loaders' },
  };
  assert.equal(searchNodeDefs(defs, 'checkpointloader')[0].name, 'CheckpointLoaderSimple');
});

test('fuzzy search ignores spaces between words', () => {
  assert.equal(searchNodeDefs(OBJECT_INFO, 'checkpoint loader')[0].name, 'CheckpointLoaderSimple');
  assert.equal(searchNodeDefs(OBJECT_INFO, 'empty latent')[0].name, 'EmptyLatentImage');
  assert.equal(searchNodeDefs(OBJECT_INFO, 'vae decode')[0].name, 'VAEDecode');
  assert.equal(searchNodeDefs(OBJECT_INFO, 'save image')[0].name, 'SaveImage');
});

test('seed control values in every saved form map by name, never shifting later values', () => {
  const def = OBJECT_INFO.KSampler;
  const tail = [20, 7.5, 'euler', 'normal', 1];
  const modern = widgetValuesByName(def, [42, 'increment', ...tail]);
  const missing = widgetValuesByName(def, [42, ...tail]);
  const oldest = widgetValuesByName(def, [42, true, ...tail]);
  const off = widgetValuesByName(def, [42, false, ...tail]);
  for (const parsed of [modern, missing, oldest, off]) {
    assert.deepEqual(parsed.values, { seed: 42, steps: 20, cfg: 7.5, sampler_name: 'euler', scheduler: 'normal', denoise: 1 });
  }
  assert.deepEqual(modern.controls, { seed: 'increment' });
  assert.deepEqual(missing.controls, {});
  assert.deepEqual(oldest.controls, { seed: 'randomize' });
  assert.deepEqual(off.controls, { seed: 'fixed' });
});

test('the Add Node menu lists folders, then the nodes of each category level', async () => {
  const { menuLevel } = await import('../src/graph/categories.js');
  const types = [
    { type: 'KSampler', title: 'KSampler', category: 'sampling' },
    { type: 'SamplerCustom', title: 'SamplerCustom', category: 'sampling/custom_sampling' },
    { type: 'BasicScheduler', title: 'BasicScheduler', category: 'sampling/custom_sampling/schedulers' },
    { type: 'Note', title: 'Note', category: 'utils' },
    { type: 'Orphan', title: 'Orphan', category: '' },
  ];
  assert.deepEqual(menuLevel(types, '').folders, ['sampling', 'utils']);
  assert.deepEqual(menuLevel(types, '').nodes.map((n) => n.type), ['Orphan']);
  assert.deepEqual(menuLevel(types, 'sampling').folders, ['custom_sampling']);
  assert.deepEqual(menuLevel(types, 'sampling').nodes.map((n) => n.type), ['KSampler']);
  assert.deepEqual(menuLevel(types, 'sampling/custom_sampling').folders, ['schedulers']);
});

test('the default graph prefers a general-purpose SD1.5 checkpoint over the alphabetically first file', async () => {
  const { pickCheckpoint } = await import('../src/graph/defaults.js');
  assert.equal(pickCheckpoint(['a_inpainting.safetensors', 'sd_xl_refiner_1.0.safetensors', 'sd_xl_base_1.0.safetensors',
    'v1-5-pruned-emaonly.safetensors']), 'v1-5-pruned-emaonly.safetensors');
  assert.equal(pickCheckpoint(['b-refiner.safetensors', 'sd_xl_base_1.0.safetensors']), 'sd_xl_base_1.0.safetensors');
  assert.equal(pickCheckpoint(['anime_mix.safetensors', 'zz_inpaint.safetensors']), 'anime_mix.safetensors');
  assert.equal(pickCheckpoint(['only_inpaint.safetensors']), 'only_inpaint.safetensors');
  assert.equal(pickCheckpoint([]), '');
});

test('markdown notes parse into headings, lists, code and styled inline spans', async () => {
  const { markdownBlocks } = await import('../src/graph/markdown.js');
  const blocks = markdownBlocks('## Model link\n\n**checkpoints**\n\n- [v1-5.safetensors](https://x/y)\n1. first\n'
    + '```\n📂 ComfyUI/\n```\nPositive = “Do this” <br/>\nNegative');
  assert.deepEqual(blocks.map((b) => b.kind), ['h2', 'p', 'li', 'li', 'code', 'p']);
  assert.deepEqual(blocks[1].spans, [{ text: 'checkpoints', bold: true }]);
  assert.deepEqual(blocks[2].spans, [{ text: 'v1-5.safetensors' }]);
  assert.equal(blocks[3].marker, '1.');
  assert.equal(blocks[4].spans[0].text, '📂 ComfyUI/');
  assert.equal(blocks[5].spans.map((s) => s.text).join(''), 'Positive = “Do this” \n Negative');
});
