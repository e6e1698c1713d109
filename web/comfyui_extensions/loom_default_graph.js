/**
 * Loom's extension for ComfyUI's official frontend (served only with `--front-end comfyui`).
 *
 * The frontend's built-in default graph is ComfyUI's current one, for a model family Loom does not
 * run. This replaces it, wherever the frontend loads its default (a returning user's start, "New"
 * with the default workflow, "Load Default"), with a text-to-image graph of Loom's core nodes on an
 * installed checkpoint, and says what to install when models/checkpoints/ is empty.
 */
import { app } from '../../scripts/app.js';

let loomDefault = null;
const PREFERRED = [/v1-?5|sd-?1\.?5|sd15/i, /sd_?xl|sdxl/i, /./];

async function checkpointNames() {
  const response = await app.api.fetchApi('/object_info/CheckpointLoaderSimple');
  if (!response.ok) return [];
  const info = await response.json();
  const spec = info?.CheckpointLoaderSimple?.input?.required?.ckpt_name;
  if (!spec) return [];
  if (Array.isArray(spec[0])) return spec[0];
  return spec[1]?.options ?? [];
}

function pickCheckpoint(names) {
  for (const pattern of PREFERRED) {
    const found = names.find((name) => pattern.test(name));
    if (found) return found;
  }
  return '';
}

function node(id, type, pos, size, inputs, outputs, widgets) {
  return {
    id, type, pos, size, flags: {}, order: id, mode: 0, properties: { 'Node name for S&R': type },
    inputs: inputs.map(([name, kind, link]) => ({ name, type: kind, link })),
    outputs: outputs.map(([name, kind, links], slot) => ({ name, type: kind, links, slot_index: slot })),
    widgets_values: widgets,
  };
}

/** ComfyUI's classic text-to-image graph (UI format 0.4) on `ckpt`. */
export function textToImageGraph(ckpt) {
  return {
    last_node_id: 9, last_link_id: 9,
    nodes: [
      node(4, 'CheckpointLoaderSimple', [26, 474], [315, 98], [],
        [['MODEL', 'MODEL', [1]], ['CLIP', 'CLIP', [3, 5]], ['VAE', 'VAE', [8]]], [ckpt]),
      node(6, 'CLIPTextEncode', [415, 186], [422, 164], [['clip', 'CLIP', 3]],
        [['CONDITIONING', 'CONDITIONING', [4]]],
        ['beautiful scenery nature glass bottle landscape, purple galaxy bottle,']),
      node(7, 'CLIPTextEncode', [413, 389], [425, 180], [['clip', 'CLIP', 5]],
        [['CONDITIONING', 'CONDITIONING', [6]]], ['text, watermark']),
      node(5, 'EmptyLatentImage', [473, 609], [315, 106], [], [['LATENT', 'LATENT', [2]]], [512, 512, 1]),
      node(3, 'KSampler', [863, 186], [315, 262],
        [['model', 'MODEL', 1], ['positive', 'CONDITIONING', 4], ['negative', 'CONDITIONING', 6],
          ['latent_image', 'LATENT', 2]],
        [['LATENT', 'LATENT', [7]]], [156680208700286, 'randomize', 20, 8, 'euler', 'normal', 1]),
      node(8, 'VAEDecode', [1209, 188], [210, 46], [['samples', 'LATENT', 7], ['vae', 'VAE', 8]],
        [['IMAGE', 'IMAGE', [9]]], []),
      node(9, 'SaveImage', [1451, 189], [210, 58], [['images', 'IMAGE', 9]], [], ['ComfyUI']),
    ],
    links: [
      [1, 4, 0, 3, 0, 'MODEL'], [2, 5, 0, 3, 3, 'LATENT'], [3, 4, 1, 6, 0, 'CLIP'], [4, 6, 0, 3, 1, 'CONDITIONING'],
      [5, 4, 1, 7, 0, 'CLIP'], [6, 7, 0, 3, 2, 'CONDITIONING'], [7, 3, 0, 8, 0, 'LATENT'], [8, 4, 2, 8, 1, 'VAE'],
      [9, 8, 0, 9, 0, 'IMAGE'],
    ],
    groups: [], config: {}, extra: { ds: { scale: 1, offset: [0, 0] } }, version: 0.4,
  };
}

/** The frontend's own default graph: no graph (`loadGraphData()` loads the default), the object, or a copy. */
function isFrontendDefault(graph) {
  if (graph == null) return true;
  const builtIn = window.comfyAPI?.defaultGraph?.defaultGraph;
  if (builtIn == null) return false;
  return graph === builtIn || (graph.nodes?.length === builtIn.nodes?.length
    && graph.nodes?.every((n, i) => n.type === builtIn.nodes[i].type && n.id === builtIn.nodes[i].id));
}

/** True while the canvas shows the frontend's default graph (loaded before this extension's setup). */
function showingFrontendDefault() {
  const builtIn = window.comfyAPI?.defaultGraph?.defaultGraph;
  const nodes = app.graph?.nodes ?? [];
  if (!builtIn || nodes.length !== builtIn.nodes.length) return false;
  const types = (list) => list.map((n) => `${n.id}:${n.type}`).sort().join(',');
  return types(nodes) === types(builtIn.nodes);
}

let loomDefaultReady = null;

async function buildLoomDefault() {
  const ckpt = pickCheckpoint(await checkpointNames().catch(() => []));
  loomDefault = textToImageGraph(ckpt);
  window.loomDefaultGraph = loomDefault;
  return loomDefault;
}

app.registerExtension({
  name: 'Loom.DefaultGraph',
  init() {
    // Swap the default at the source, before the frontend first loads a graph: every load of the frontend's
    // default graph loads Loom's instead.
    loomDefaultReady = buildLoomDefault();
    const proto = Object.getPrototypeOf(app);
    const original = proto.loadGraphData;
    proto.loadGraphData = async function loadGraphData(graph, ...rest) {
      const chosen = isFrontendDefault(graph) ? structuredClone(await loomDefaultReady) : graph;
      return original.call(this, chosen, ...rest);
    };
  },
  async setup() {
    const graph = await loomDefaultReady;
    if (showingFrontendDefault()) await app.loadGraphData(structuredClone(graph));
    if (!graph.nodes[0].widgets_values[0]) {
      app.extensionManager?.toast?.add({
        severity: 'warn', summary: 'No checkpoint installed',
        detail: 'Put a Stable Diffusion checkpoint (.safetensors) in models/checkpoints/ and reload the page.',
      });
    }
  },
  afterConfigureGraph() {
    // A load started while another is configuring is dropped: replace once that one has finished.
    if (loomDefault && showingFrontendDefault()) {
      setTimeout(() => { if (showingFrontendDefault()) app.loadGraphData(structuredClone(loomDefault)); }, 0);
    }
  },
});
