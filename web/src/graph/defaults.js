/**
 * The default Stable Diffusion text-to-image workflow shown on a first visit,
 * built with the document edit functions (checkpoint -> two prompts ->
 * empty latent -> KSampler -> VAE decode -> save).
 */

import { emptyWorkflow, addNode, connect, addGroup } from './doc.js';

const slot = (name, type) => ({ name, type, link: null });
const out = (name, type) => ({ name, type, links: [] });

function node(type, pos, size, inputs, outputs, widgetsValues, title) {
  const n = {
    type, pos, size, flags: {}, order: 0, mode: 0, inputs, outputs,
    properties: { 'Node name for S&R': type }, widgets_values: widgetsValues,
  };
  if (title) n.title = title;
  return n;
}

// Checkpoints a text-to-image graph suits best first: SD1.5, then SD2, then SDXL, then anything else (refiners,
// inpainting and other special-purpose files last).
const PREFERRED_CHECKPOINTS = [/v1-?5|sd-?1\.?5|sd15/i, /v2-?1|sd-?2|sd21/i, /sd_?xl|sdxl/i];
const SPECIAL_PURPOSE = /refiner|inpaint|instruct|pix2pix|upscal|unclip|controlnet|depth/i;

/** The checkpoint the default graph should preselect from `names` ('' when there is none). */
export function pickCheckpoint(names) {
  const general = names.filter((n) => !SPECIAL_PURPOSE.test(n));
  for (const pattern of PREFERRED_CHECKPOINTS) {
    const found = general.find((n) => pattern.test(n));
    if (found) return found;
  }
  return general[0] ?? names[0] ?? '';
}

/** The default workflow; `checkpoint` names the model to preselect. */
export function defaultWorkflow(checkpoint = 'v1-5-pruned-emaonly.safetensors') {
  let doc = emptyWorkflow();
  const ids = {};
  const add = (key, n) => {
    const r = addNode(doc, { ...n, order: doc.nodes.length });
    doc = r.doc;
    ids[key] = r.id;
  };
  add('ckpt', node('CheckpointLoaderSimple', [30, 300], [315, 98], [],
    [out('MODEL', 'MODEL'), out('CLIP', 'CLIP'), out('VAE', 'VAE')], [checkpoint]));
  add('pos', node('CLIPTextEncode', [420, 180], [420, 180], [slot('clip', 'CLIP')],
    [out('CONDITIONING', 'CONDITIONING')],
    ['beautiful scenery nature glass bottle landscape, purple galaxy bottle,'],
    'CLIP Text Encode (Positive Prompt)'));
  add('neg', node('CLIPTextEncode', [420, 420], [420, 180], [slot('clip', 'CLIP')],
    [out('CONDITIONING', 'CONDITIONING')], ['text, watermark'],
    'CLIP Text Encode (Negative Prompt)'));
  add('latent', node('EmptyLatentImage', [480, 660], [315, 106], [],
    [out('LATENT', 'LATENT')], [512, 512, 1]));
  add('sampler', node('KSampler', [900, 190], [315, 262],
    [slot('model', 'MODEL'), slot('positive', 'CONDITIONING'),
      slot('negative', 'CONDITIONING'), slot('latent_image', 'LATENT')],
    [out('LATENT', 'LATENT')], [156680208700286, 'randomize', 20, 8, 'euler', 'normal', 1]));
  add('decode', node('VAEDecode', [1260, 190], [210, 46],
    [slot('samples', 'LATENT'), slot('vae', 'VAE')], [out('IMAGE', 'IMAGE')], []));
  add('save', node('SaveImage', [1500, 190], [380, 400], [slot('images', 'IMAGE')], [], ['ComfyUI']));
  const wires = [
    ['ckpt', 0, 'sampler', 0], ['ckpt', 1, 'pos', 0], ['ckpt', 1, 'neg', 0],
    ['pos', 0, 'sampler', 1], ['neg', 0, 'sampler', 2], ['latent', 0, 'sampler', 3],
    ['sampler', 0, 'decode', 0], ['ckpt', 2, 'decode', 1], ['decode', 0, 'save', 0],
  ];
  for (const [a, as, b, bs] of wires) doc = connect(doc, ids[a], as, ids[b], bs);
  doc = addGroup(doc, 'Prompt', [400, 100, 460, 520]);
  return doc;
}
