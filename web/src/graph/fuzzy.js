/**
 * Fuzzy search over node definitions for the node palette.
 *
 * A query matches a text when its characters appear in order (a subsequence);
 * the score rewards contiguous runs, matches at word starts and an exact or
 * prefix match, so "ksam" ranks "KSampler" above "KSamplerAdvanced".
 */

const WORD_START = /[\s_/\-.]/;

/**
 * Score `query` against `text`; -Infinity when it is not a subsequence.
 * Spaces are optional on both sides ("checkpoint loader" finds
 * "CheckpointLoaderSimple").
 */
export function fuzzyScore(query, text) {
  const plain = subsequenceScore(query, text);
  const squeezed = subsequenceScore(query.replace(/\s+/g, ''), String(text ?? '').replace(/\s+/g, ''));
  return Math.max(plain, squeezed - 1);
}

function subsequenceScore(query, text) {
  const q = query.toLowerCase().trim();
  const t = String(text ?? '').toLowerCase();
  if (!q) return 0;
  if (t === q) return 1000;
  let score = t.startsWith(q) ? 500 : t.includes(q) ? 250 : 0;
  let ti = 0;
  let run = 0;
  for (const ch of q) {
    const found = t.indexOf(ch, ti);
    if (found < 0) return -Infinity;
    run = found === ti ? run + 1 : 1;
    const atWordStart = found === 0 || WORD_START.test(t[found - 1]) ||
      (text[found] !== undefined && text[found] === text[found].toUpperCase() &&
       text[found] !== text[found].toLowerCase());
    score += run * 2 + (atWordStart ? 5 : 0) - (found - ti) * 0.1;
    ti = found + 1;
  }
  return score - t.length * 0.05;
}

/**
 * Rank node definitions (`/object_info` values) for a query.
 * Matches on name, display name and category; returns `[{name, def, score}]`.
 */
export function searchNodeDefs(defs, query, limit = 50) {
  const out = [];
  for (const [name, def] of Object.entries(defs)) {
    const score = Math.max(
      fuzzyScore(query, name),
      fuzzyScore(query, def.display_name ?? name),
      fuzzyScore(query, def.category ?? '') - 100,
    );
    // Deprecated and experimental nodes rank below the others, as in ComfyUI's search.
    const demote = def.deprecated || /DEPRECATED/.test(def.display_name ?? '') ? 300 : def.experimental ? 50 : 0;
    if (score > -Infinity) out.push({ name, def, score: score - demote });
  }
  out.sort((a, b) => b.score - a.score || a.name.localeCompare(b.name));
  return out.slice(0, limit);
}

/** Group node names into a nested category tree: {sub: {...}, nodes: [names]}. */
export function categoryTree(defs) {
  const root = { sub: {}, nodes: [] };
  for (const [name, def] of Object.entries(defs)) {
    let at = root;
    for (const part of String(def.category || 'uncategorized').split('/')) {
      at.sub[part] ??= { sub: {}, nodes: [] };
      at = at.sub[part];
    }
    at.nodes.push(name);
  }
  return root;
}
