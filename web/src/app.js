/**
 * The editor application: owns the litegraph graph and canvas, the node
 * definitions, the undo history of plain documents, queueing prompts and the
 * extension hooks. Rendering is litegraph's; the document of record is the
 * plain UI-format JSON that `serialize()` returns and `loadGraph()` accepts.
 */

import { LiteGraph, LGraph, LGraphCanvas } from '@comfyorg/litegraph';
import { LoomApi } from './api.js';
import { typesMatch } from './graph/types.js';
import { uiToApi } from './graph/toapi.js';
import { apiToUi } from './graph/fromapi.js';
import { nextSeed } from './graph/seed.js';
import { defaultWorkflow, pickCheckpoint } from './graph/defaults.js';
import { marksFromPromptError } from './graph/errors.js';
import { createHistory, record, undo, redo, current } from './graph/history.js';
import { makeNodeClass, registerVirtualNodes } from './ui/nodes.js';
import { installNodeDrawing } from './ui/draw.js';
import { showInputPreview } from './ui/widgets.js';
import { toast } from './ui/toast.js';

const STORAGE_KEY = 'loom.workflow';
// Link colours by socket type, close to what ComfyUI users are used to.
const LINK_COLORS = {
  MODEL: '#B39DDB', CLIP: '#FFD500', VAE: '#FF6E6E', CONDITIONING: '#FFA931', LATENT: '#FF9CF9',
  IMAGE: '#64B5F6', MASK: '#81C784', INT: '#29699c', FLOAT: '#29699c', STRING: '#77ff77',
};

export class LoomApp {
  constructor() {
    this.api = new LoomApi();
    this.extensions = [];
    this.defs = {};
    this.marks = { message: null, nodes: {} };
    this.exec = { promptId: null, node: null, nodeProgress: {}, done: 0, total: 0, preview: null };
    this.history = null;
    this.batchCount = 1;
  }

  /** Register a web extension: `{name, init?, setup?, nodeCreated?, beforeRegisterNodeDef?}`. */
  registerExtension(ext) {
    if (!ext?.name) throw new Error('registerExtension needs an object with a name');
    if (this.extensions.some((e) => e.name === ext.name)) throw new Error(`extension ${ext.name} already registered`);
    this.extensions.push(ext);
  }

  /** Call hook `method` on every extension; errors are logged and do not stop the others. */
  async invokeExtensionsAsync(method, ...args) {
    for (const ext of this.extensions) {
      try {
        await ext[method]?.(...args, this);
      } catch (err) {
        console.error(`extension ${ext.name} failed in ${method}`, err);
      }
    }
  }

  invokeExtensions(method, ...args) {
    for (const ext of this.extensions) {
      try {
        ext[method]?.(...args, this);
      } catch (err) {
        console.error(`extension ${ext.name} failed in ${method}`, err);
      }
    }
  }

  /** Build graph and canvas, load definitions and extensions, restore the last workflow. */
  async setup(canvasEl) {
    LiteGraph.isValidConnection = (a, b) => typesMatch(a, b);
    LiteGraph.release_link_on_empty_shows_menu = false;
    LiteGraph.alt_drag_do_clone_nodes = true;
    this.graph = new LGraph();
    this.canvas = new LGraphCanvas(canvasEl, this.graph);
    this.canvas.allow_searchbox = false;
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    Object.assign(this.canvas.default_connection_color_byType ?? {}, LINK_COLORS);
    LGraphCanvas.link_type_colors = { ...(LGraphCanvas.link_type_colors ?? {}), ...LINK_COLORS };
    this.canvasEl = canvasEl;
    installNodeDrawing(this);
    registerVirtualNodes();
    await this.loadExtensions();
    await this.invokeExtensionsAsync('init');
    await this.registerNodeDefs(await this.api.getObjectInfo());
    this.loadGraph(this.restoredWorkflow() ?? this.defaultGraph(), { keepView: false });
    await this.invokeExtensionsAsync('setup');
    this.graph.start();
  }

  async loadExtensions() {
    let urls = [];
    try {
      urls = await this.api.getExtensions();
    } catch (err) {
      console.warn('could not list web extensions', err);
    }
    for (const url of urls) {
      const target = new URL(String(url).replace(/^\/+/, ''), this.api.base);
      if (this.api.token) target.searchParams.set('token', this.api.token);
      const href = target.toString();
      try {
        await import(/* @vite-ignore */ href);
      } catch (err) {
        console.error(`web extension ${url} failed to load`, err);
        toast(`Extension ${url} failed to load: ${err.message}`, 'error');
      }
    }
  }

  /** Register litegraph node types for `/object_info` definitions. */
  async registerNodeDefs(defs) {
    this.defs = defs;
    for (const [name, def] of Object.entries(defs)) {
      const cls = makeNodeClass(this, name, def);
      await this.invokeExtensionsAsync('beforeRegisterNodeDef', cls, def);
      LiteGraph.registerNodeType(name, cls);
      cls.category = def.category;
    }
  }

  /** Re-read `/object_info` and refresh every combo's choices (model lists). */
  async refreshComboLists() {
    const defs = await this.api.getObjectInfo();
    this.defs = defs;
    for (const node of this.graph._nodes) {
      const def = defs[node.comfyClass ?? node.type];
      for (const w of node.widgets ?? []) {
        const spec = def?.input?.required?.[w.name] ?? def?.input?.optional?.[w.name];
        if (w.type === 'combo' && spec) {
          const values = Array.isArray(spec[0]) ? spec[0] : spec[1]?.options;
          if (values) w.options.values = values;
        }
      }
    }
    this.canvas.setDirty(true, true);
    toast('Model lists refreshed');
  }

  /** The default text-to-image graph on the most suitable installed checkpoint (says so when there is none). */
  defaultGraph() {
    const spec = this.defs.CheckpointLoaderSimple?.input?.required?.ckpt_name;
    const names = Array.isArray(spec?.[0]) ? spec[0] : spec?.[1]?.options ?? [];
    const chosen = pickCheckpoint(names);
    if (!chosen) {
      toast('No checkpoint installed: put a Stable Diffusion checkpoint (.safetensors) in models/checkpoints/, '
        + 'then press Refresh.', 'error', 15000);
    }
    return defaultWorkflow(chosen || undefined);
  }

  restoredWorkflow() {
    try {
      const text = localStorage.getItem(STORAGE_KEY);
      return text ? JSON.parse(text) : null;
    } catch (err) {
      console.warn('stored workflow unreadable, starting from the default', err);
      return null;
    }
  }

  /** The current document (UI workflow format). */
  serialize() {
    return this.graph.serialize();
  }

  /** Show a UI-format document (or an API prompt via `{prompt}`). */
  loadGraph(doc, { keepView = false, resetHistory = true } = {}) {
    this.marks = { message: null, nodes: {} };
    const missing = [...new Set((doc.nodes ?? []).map((n) => n.type))]
      .filter((t) => !LiteGraph.registered_node_types[t]);
    if (missing.length) toast(`Missing node types (kept, shown in red): ${missing.join(', ')}`, 'error', 8000);
    this.graph.clear();
    this.graph.configure(structuredClone(doc));
    const ds = doc.extra?.ds;
    if (!keepView && ds?.offset && ds?.scale) {
      this.canvas.ds.offset = [...ds.offset];
      this.canvas.ds.scale = ds.scale;
    } else if (!keepView) {
      this.canvas.ds.offset = [20, 20];
      this.canvas.ds.scale = 0.75;
    }
    if (resetHistory) this.history = createHistory(this.serialize());
    this.canvas.setDirty(true, true);
    // The background is drawn before the visible area is recomputed: redraw it next frame.
    requestAnimationFrame(() => this.canvas.setDirty(true, true));
    this.persist();
  }

  /** Load an API-format prompt by rebuilding a graph from it. */
  loadApiPrompt(prompt) {
    this.loadGraph(apiToUi(prompt, this.defs));
  }

  /** Record the present document for undo and persist it (call after edits). */
  checkpoint() {
    if (!this.history) return;
    this.history = record(this.history, this.serialize());
    this.persist();
  }

  undo() { this.#travel(undo); }
  redo() { this.#travel(redo); }

  #travel(step) {
    this.checkpoint();
    const next = step(this.history);
    if (next === this.history) return;
    this.history = next;
    this.loadGraph(current(next), { keepView: true, resetHistory: false });
  }

  persist() {
    clearTimeout(this.persistTimer);
    this.persistTimer = setTimeout(() => {
      try {
        localStorage.setItem(STORAGE_KEY, JSON.stringify(this.serialize()));
      } catch (err) {
        console.warn('could not store the workflow', err);
      }
    }, 200);
  }

  onWidgetChanged(node) {
    this.canvas?.setDirty(true, true);
    setTimeout(() => this.checkpoint(), 0);
  }

  /** The API prompt of the current graph. */
  graphToPrompt() {
    const workflow = this.serialize();
    return { workflow, output: uiToApi(workflow, this.defs) };
  }

  /** Queue the graph `count` times, applying seed controls after each. */
  async queuePrompt(count = this.batchCount, { front = false } = {}) {
    for (let i = 0; i < count; i++) {
      const { workflow, output } = this.graphToPrompt();
      try {
        const res = await this.api.queuePrompt(output, workflow, { front, previewMethod: this.previewMethod });
        this.marks = { message: null, nodes: {} };
        this.lastPromptId = res.prompt_id;
      } catch (err) {
        if (!err.body) throw err;
        this.showPromptErrors(err.body);
        return false;
      }
      this.applySeedControls();
    }
    this.canvas.setDirty(true, true);
    return true;
  }

  applySeedControls() {
    for (const node of this.graph._nodes) {
      if (node.mode === 2 || node.mode === 4) continue;
      for (const w of node.widgets ?? []) {
        if (!w.linkedControl || w.hidden) continue;
        w.value = nextSeed(w.value, w.linkedControl.value, w.desc ?? {});
      }
    }
    this.checkpoint();
  }

  showPromptErrors(body) {
    this.marks = marksFromPromptError(body);
    const lines = Object.entries(this.marks.nodes).map(([id, m]) =>
      `#${id} ${m.classType ?? ''}: ${m.messages.join('; ')}`);
    toast([this.marks.message, ...lines].join('\n'), 'error', 10000);
    this.canvas.setDirty(true, true);
  }

  /** Set the images a node shows (URLs); output and preview images alike. */
  setNodeImages(node, urls) {
    node.imgs = urls.map((src) => {
      const img = new Image();
      img.onload = () => this.canvas.setDirty(true, true);
      img.src = src;
      return img;
    });
    this.makeRoomForImage(node);
    this.canvas.setDirty(true, true);
  }

  /** Grow `node` below its widgets so an image (an output or a live preview) has room to show. */
  makeRoomForImage(node) {
    const needed = (node.computeSize()[1] ?? 100) + 220;
    if (node.size[1] < needed) node.setSize([Math.max(node.size[0], 260), needed]);
  }

  /** Upload a file for an image combo and select it. */
  async uploadToCombo(node, widget, file) {
    const res = await this.api.upload(file);
    const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
    if (!widget.options.values.includes(value)) widget.options.values = [...widget.options.values, value];
    widget.value = value;
    showInputPreview(node, value, this);
    this.checkpoint();
    return value;
  }

  async openMaskEditor(node) {
    const { openMaskEditor } = await import('./ui/mask.js');
    openMaskEditor(this, node);
  }

  nodeById(id) {
    return this.graph.getNodeById(Number(id)) ?? this.graph.getNodeById(id);
  }
}
