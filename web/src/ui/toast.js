/** Short notices in the corner of the page (errors stay longer). */

/** Show `text`; kind is "info" or "error". Returns the element. */
export function toast(text, kind = 'info', ms = 4000) {
  let box = document.getElementById('loom-toasts');
  if (!box) {
    box = document.createElement('div');
    box.id = 'loom-toasts';
    document.body.appendChild(box);
  }
  const el = document.createElement('div');
  el.className = `loom-toast ${kind}`;
  el.textContent = text;
  el.addEventListener('click', () => el.remove());
  box.appendChild(el);
  setTimeout(() => el.remove(), ms);
  return el;
}
