/**
 * Binary websocket frames from the server: a 4-byte big-endian event type
 * (1 = preview image), then for previews a 4-byte image format (1 = JPEG,
 * 2 = PNG), then the image bytes.
 */

export const PREVIEW_IMAGE = 1;
const FORMATS = { 1: 'image/jpeg', 2: 'image/png' };

/** Decode a frame: `{event, mime, bytes}` for previews, `{event, bytes}` otherwise. */
export function parseBinaryFrame(buffer) {
  if (buffer.byteLength < 4) throw new Error('binary frame shorter than its 4-byte header');
  const view = new DataView(buffer);
  const event = view.getUint32(0);
  if (event !== PREVIEW_IMAGE) return { event, bytes: new Uint8Array(buffer, 4) };
  const format = view.getUint32(4);
  return { event, mime: FORMATS[format] ?? 'image/jpeg', bytes: new Uint8Array(buffer, 8) };
}
