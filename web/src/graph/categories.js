/**
 * Node categories as a menu tree ("sampling/custom_sampling" → folder "sampling",
 * subfolder "custom_sampling"), on plain data.
 */

/**
 * The folders and nodes directly under category `path` ('' is the top), sorted by name.
 * `types`: `[{type, title, category}]`; nodes without a category sit at the top level.
 */
export function menuLevel(types, path) {
  const folders = new Set();
  const nodes = [];
  const prefix = path ? `${path}/` : '';
  for (const t of types) {
    const category = t.category ?? '';
    if (category === path) nodes.push(t);
    else if (category.startsWith(prefix) && category !== '') folders.add(category.slice(prefix.length).split('/')[0]);
  }
  const byTitle = (a, b) => String(a.title).localeCompare(String(b.title));
  return { folders: [...folders].filter(Boolean).sort((a, b) => a.localeCompare(b)), nodes: nodes.sort(byTitle) };
}
