/**
 * In-place editor for multi-line text widgets: a textarea laid over the
 * widget's area on the canvas. Commits on blur or Ctrl+Enter-free Escape
 * (Escape cancels); the canvas stays the only renderer of the text.
 */

/** Open a textarea over widget `w` of `node`; `commit(text)` receives the result. */
export function openTextEditor(node, w, commit) {
  const canvas = node.graph?.list_of_graphcanvas?.[0] ?? window.loomApp?.canvas;
  const rect = canvas.canvas.getBoundingClientRect();
  const [x, y] = canvas.convertOffsetToCanvas([node.pos[0] + 10, node.pos[1] + (w.last_y ?? w.y ?? 0)]);
  const scale = canvas.ds.scale;
  const ta = document.createElement('textarea');
  ta.className = 'loom-textedit';
  ta.value = w.value ?? '';
  ta.dataset.node = String(node.id);
  ta.dataset.widget = w.name;
  Object.assign(ta.style, {
    left: `${rect.left + x}px`, top: `${rect.top + y}px`,
    width: `${Math.max(200, (node.size[0] - 20) * scale)}px`,
    height: `${Math.max(80, 84 * scale)}px`,
    fontSize: `${Math.max(12, 12 * scale)}px`,
  });
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (keep && ta.value !== w.value) commit(ta.value);
    ta.remove();
    canvas.setDirty(true, true);
  };
  ta.addEventListener('blur', () => finish(true));
  ta.addEventListener('keydown', (e) => {
    e.stopPropagation();
    if (e.key === 'Escape') finish(false);
  });
  document.body.appendChild(ta);
  setTimeout(() => ta.focus(), 0);
  return ta;
}
