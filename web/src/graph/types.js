/**
 * Socket type matching, on plain strings (no rendering involved).
 *
 * ComfyUI's rules: `*` (or an empty type) matches anything, a comma-separated
 * type such as `"INT,FLOAT"` is a union that matches when any member matches,
 * and otherwise types must be equal.
 */

/** Split a socket type into its union members ("A,B" -> ["A", "B"]). */
export function typeMembers(type) {
  if (type === null || type === undefined) return ['*'];
  if (Array.isArray(type)) return ['COMBO'];
  const text = String(type).trim();
  if (text === '' || text === '*' || text === '0') return ['*'];
  return text.split(',').map((t) => t.trim()).filter(Boolean);
}

/** True when an output of type `outType` may feed an input of type `inType`. */
export function typesMatch(outType, inType) {
  const outs = typeMembers(outType);
  const ins = typeMembers(inType);
  if (outs.includes('*') || ins.includes('*')) return true;
  return outs.some((o) => ins.includes(o));
}
