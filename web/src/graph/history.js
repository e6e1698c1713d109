/**
 * Undo and redo over plain graph documents: a bounded stack of serialized
 * snapshots. Pure functions on an immutable `{past, present, future}` state.
 */

/** A history whose present is `doc`. */
export function createHistory(doc, limit = 100) {
  return { past: [], present: JSON.stringify(doc), future: [], limit };
}

/** Record `doc` as the new present (no-op when unchanged). */
export function record(state, doc) {
  const snap = JSON.stringify(doc);
  if (snap === state.present) return state;
  const past = [...state.past, state.present].slice(-state.limit);
  return { ...state, past, present: snap, future: [] };
}

/** Step back; returns the new state (its present is the document to show). */
export function undo(state) {
  if (!state.past.length) return state;
  const past = state.past.slice(0, -1);
  return { ...state, past, present: state.past.at(-1), future: [state.present, ...state.future] };
}

/** Step forward again after an undo. */
export function redo(state) {
  if (!state.future.length) return state;
  const [present, ...future] = state.future;
  return { ...state, past: [...state.past, state.present], present, future };
}

/** The document at the present of a history. */
export function current(state) {
  return JSON.parse(state.present);
}
