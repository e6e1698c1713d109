/**
 * The side panel: queue (running and pending, cancel, clear), history (past
 * runs, reload their workflow, their images) and the gallery of outputs.
 */

import { toast } from './toast.js';

const h = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v);
  }
  el.append(...children.filter((c) => c != null));
  return el;
};

function thumb(app, ref) {
  const url = app.api.viewURL(ref);
  return h('img', { class: 'thumb', src: url, title: ref.filename, onclick: () => window.open(url, '_blank') });
}

function workflowOf(item) {
  return item?.[3]?.extra_pnginfo?.workflow ?? null;
}

export class Panels {
  constructor(app, root) {
    this.app = app;
    this.root = root;
    this.tab = 'queue';
    this.gallery = [];
    for (const btn of root.querySelectorAll('[data-tab]')) {
      btn.addEventListener('click', () => { this.tab = btn.dataset.tab; this.refresh(); });
    }
    this.body = root.querySelector('.panel-body');
  }

  addToGallery(images, promptId) {
    this.gallery.unshift(...images.map((i) => ({ ...i, promptId })));
    this.gallery = this.gallery.slice(0, 200);
    if (this.tab === 'gallery') this.refresh();
  }

  async refresh() {
    for (const btn of this.root.querySelectorAll('[data-tab]')) btn.classList.toggle('active', btn.dataset.tab === this.tab);
    try {
      if (this.tab === 'queue') await this.renderQueue();
      else if (this.tab === 'history') await this.renderHistory();
      else this.renderGallery();
    } catch (err) {
      this.body.replaceChildren(h('div', { class: 'muted' }, `could not load: ${err.message}`));
    }
  }

  async renderQueue() {
    const q = await this.app.api.getQueue();
    const api = this.app.api;
    const row = (item, running) => h('div', { class: `qitem ${running ? 'running' : 'pending'}`, 'data-prompt-id': item[1] },
      h('span', {}, `${running ? '▶ running' : '• pending'} #${item[0]}`),
      h('button', { onclick: async () => {
        if (running) await api.interrupt();
        else await api.deleteQueueItems([item[1]]);
        this.refresh();
      } }, running ? 'Cancel' : 'Remove'),
      workflowOf(item) ? h('button', { onclick: () => this.app.loadGraph(workflowOf(item)) }, 'Load') : null);
    const running = (q.queue_running ?? []).map((i) => row(i, true));
    const pending = (q.queue_pending ?? []).map((i) => row(i, false));
    this.body.replaceChildren(
      h('div', { class: 'panel-actions' },
        h('button', { onclick: async () => { await api.clearQueue(); this.refresh(); } }, 'Clear pending'),
        h('button', { onclick: () => api.interrupt() }, 'Interrupt')),
      ...(running.length + pending.length ? [...running, ...pending] : [h('div', { class: 'muted' }, 'The queue is empty')]));
  }

  async renderHistory() {
    const hist = await this.app.api.getHistory();
    const api = this.app.api;
    const entries = Object.entries(hist).reverse().map(([id, item]) => {
      const images = Object.values(item.outputs ?? {}).flatMap((o) => o.images ?? []);
      const status = item.status?.status_str ?? (item.status?.completed ? 'success' : '');
      const wf = workflowOf(item.prompt);
      return h('div', { class: `hitem ${status}`, 'data-prompt-id': id },
        h('div', {}, h('span', {}, `#${item.prompt?.[0] ?? ''} ${status}`),
          wf ? h('button', { onclick: () => { this.app.loadGraph(wf); toast('Workflow loaded from history'); } }, 'Load') : null,
          h('button', { onclick: async () => { await api.deleteHistoryItems([id]); this.refresh(); } }, 'Delete')),
        h('div', { class: 'thumbs' }, ...images.map((ref) => thumb(this.app, ref))));
    });
    this.body.replaceChildren(
      h('div', { class: 'panel-actions' }, h('button', { onclick: async () => { await api.clearHistory(); this.refresh(); } }, 'Clear history')),
      ...(entries.length ? entries : [h('div', { class: 'muted' }, 'No past runs')]));
  }

  renderGallery() {
    this.body.replaceChildren(h('div', { class: 'thumbs gallery' },
      ...this.gallery.map((g) => thumb(this.app, g.ref))));
    if (!this.gallery.length) this.body.append(h('div', { class: 'muted' }, 'Output images appear here'));
  }
}
