/**
 * The client of Loom's HTTP and websocket API (ComfyUI's protocol).
 *
 * Every URL is relative to the page (`api/...`), so the editor works behind a
 * path prefix. An auth token given as `?token=` in the page URL is sent as a
 * Bearer header and appended to websocket and image URLs. The websocket
 * reconnects by itself with a capped back-off and re-announces `status`.
 * Server messages are dispatched as DOM events named by their `type`; binary
 * preview frames as `b_preview` events carrying a Blob.
 */

import { parseBinaryFrame, PREVIEW_IMAGE } from './graph/frames.js';

export class LoomApi extends EventTarget {
  constructor({ base = document.baseURI, token = null } = {}) {
    super();
    this.base = new URL('./', base);
    this.token = token ?? new URL(location.href).searchParams.get('token');
    this.clientId = sessionStorage.getItem('loom.clientId') ?? crypto.randomUUID();
    sessionStorage.setItem('loom.clientId', this.clientId);
    this.socket = null;
    this.connected = false;
  }

  /** Absolute URL of an API route (`route` like "/prompt" or "prompt"). */
  apiURL(route) {
    const url = new URL(`api/${route.replace(/^\/+/, '')}`, this.base);
    return url.toString();
  }

  /** URL of a file served by /view, with the token when one is set. */
  viewURL({ filename, subfolder = '', type = 'output' }, extra = {}) {
    const q = new URLSearchParams({ filename, subfolder, type, ...extra });
    if (this.token) q.set('token', this.token);
    return `${this.apiURL('view')}?${q}`;
  }

  /** fetch() with the auth header; throws on network errors only. */
  async fetchApi(route, init = {}) {
    const headers = new Headers(init.headers ?? {});
    if (this.token) headers.set('Authorization', `Bearer ${this.token}`);
    return fetch(this.apiURL(route), { ...init, headers });
  }

  async getJson(route) {
    const res = await this.fetchApi(route);
    if (!res.ok) throw new Error(`GET ${route} failed: HTTP ${res.status}`);
    return res.json();
  }

  async postJson(route, body) {
    return this.fetchApi(route, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
  }

  getObjectInfo() { return this.getJson('object_info'); }
  getQueue() { return this.getJson('queue'); }
  getHistory(max = 64) { return this.getJson(`history?max_items=${max}`); }
  getExtensions() { return this.getJson('extensions'); }
  getModels(folder) { return this.getJson(`models/${encodeURIComponent(folder)}`); }
  interrupt() { return this.postJson('interrupt', {}); }
  clearQueue() { return this.postJson('queue', { clear: true }); }
  deleteQueueItems(ids) { return this.postJson('queue', { delete: ids }); }
  clearHistory() { return this.postJson('history', { clear: true }); }
  deleteHistoryItems(ids) { return this.postJson('history', { delete: ids }); }

  /**
   * POST /prompt. Resolves to the server's JSON; a 400 rejects with an Error
   * whose `body` holds `{error, node_errors}`.
   */
  async queuePrompt(prompt, workflow, { front = false, previewMethod = null } = {}) {
    const body = { prompt, client_id: this.clientId, extra_data: { extra_pnginfo: { workflow } } };
    if (previewMethod) body.extra_data.preview_method = previewMethod;
    if (front) body.front = true;
    const res = await this.postJson('prompt', body);
    const json = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error(`prompt rejected (HTTP ${res.status})`);
      err.body = json;
      throw err;
    }
    return json;
  }

  /** POST a file to /upload/image or /upload/mask; resolves to `{name, subfolder, type}`. */
  async upload(file, { route = 'upload/image', subfolder = '', type = 'input', overwrite = false, extra = {} } = {}) {
    const form = new FormData();
    form.append('image', file, file.name ?? 'image.png');
    form.append('subfolder', subfolder);
    form.append('type', type);
    if (overwrite) form.append('overwrite', 'true');
    for (const [k, v] of Object.entries(extra)) form.append(k, v);
    const res = await this.fetchApi(route, { method: 'POST', body: form });
    if (!res.ok) throw new Error(`upload failed (HTTP ${res.status}): ${errorText(await res.text())}`);
    return res.json();
  }

  /** Open the websocket and keep it open across server restarts. */
  connect(delay = 500) {
    const url = new URL(`ws?clientId=${encodeURIComponent(this.clientId)}`, this.apiURL(''));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) url.searchParams.set('token', this.token);
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    this.socket = ws;
    ws.addEventListener('open', () => {
      const wasReconnect = this.everConnected;
      this.connected = this.everConnected = true;
      this.dispatchEvent(new CustomEvent(wasReconnect ? 'reconnected' : 'connected'));
    });
    ws.addEventListener('message', (ev) => this.#onMessage(ev));
    ws.addEventListener('close', () => {
      if (this.socket !== ws) return;
      if (this.connected) this.dispatchEvent(new CustomEvent('reconnecting'));
      this.connected = false;
      setTimeout(() => this.connect(Math.min(delay * 2, 5000)), delay);
    });
  }

  #onMessage(ev) {
    if (ev.data instanceof ArrayBuffer) {
      const frame = parseBinaryFrame(ev.data);
      if (frame.event === PREVIEW_IMAGE) {
        const blob = new Blob([frame.bytes], { type: frame.mime });
        this.dispatchEvent(new CustomEvent('b_preview', { detail: blob }));
      }
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (err) {
      console.warn('ignoring a non-JSON websocket message', err);
      return;
    }
    if (msg.type === 'status' && msg.data?.sid) this.clientId = msg.data.sid;
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg.data }));
  }
}

/** The readable part of an error body: ComfyUI's `{error: {message}}` / `{error: "..."}`, or the text. */
export function errorText(body) {
  try {
    const parsed = JSON.parse(body);
    const error = parsed?.error ?? parsed;
    if (typeof error === 'string') return error;
    if (typeof error?.message === 'string') return error.message;
  } catch {
    // not JSON: the text itself
  }
  return String(body).slice(0, 300);
}
