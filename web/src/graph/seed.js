/**
 * control_after_generate: how a seed widget changes after a prompt is queued
 * (ComfyUI's modes: fixed, increment, decrement, randomize).
 */

// ComfyUI caps random seeds at 2^50 so they stay exact in JS numbers.
const RANDOM_MAX = 1125899906842624;

/** The next value of a seed widget; `random` returns a float in [0, 1). */
export function nextSeed(value, mode, { min = 0, max = RANDOM_MAX, step = 1 } = {}, random = Math.random) {
  const lo = Math.max(min, 0);
  const hi = Math.min(max, RANDOM_MAX);
  switch (mode) {
    case 'increment':
      return value + step > max ? min : value + step;
    case 'decrement':
      return value - step < min ? max : value - step;
    case 'randomize':
      return lo + Math.floor(random() * (hi - lo + 1));
    default:
      return value;
  }
}
