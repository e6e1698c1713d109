/**
 * Reading the text chunks of a PNG file (workflow metadata), in plain JS.
 *
 * Format: PNG specification (W3C, 2nd ed.) §5.3 chunk layout (length, type,
 * data, CRC) and §11.3.4 tEXt / iTXt. ComfyUI stores the UI workflow under
 * the keyword `workflow` and the API prompt under `prompt`.
 */

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function decodeText(bytes) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return new TextDecoder('latin1').decode(bytes);
  }
}

/** True when the buffer starts with the PNG signature. */
export function isPng(buffer) {
  const b = new Uint8Array(buffer, 0, Math.min(8, buffer.byteLength));
  return b.length === 8 && SIGNATURE.every((v, i) => b[i] === v);
}

function parseITXt(data) {
  const kwEnd = data.indexOf(0);
  const compressed = data[kwEnd + 1];
  let at = kwEnd + 3;
  at = data.indexOf(0, at) + 1; // language tag
  at = data.indexOf(0, at) + 1; // translated keyword
  if (compressed) return null; // compressed iTXt needs inflate; ComfyUI never writes it
  return [decodeText(data.subarray(0, kwEnd)), decodeText(data.subarray(at))];
}

/** Return `{keyword: text}` for every tEXt and uncompressed iTXt chunk. */
export function readPngTextChunks(buffer) {
  if (!isPng(buffer)) throw new Error('not a PNG file (bad signature)');
  const view = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  const out = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    if (type === 'tEXt') {
      const sep = data.indexOf(0);
      out[decodeText(data.subarray(0, sep))] = decodeText(data.subarray(sep + 1));
    } else if (type === 'iTXt') {
      const kv = parseITXt(data);
      if (kv) out[kv[0]] = kv[1];
    } else if (type === 'IEND') {
      break;
    }
    pos += 12 + length;
  }
  return out;
}

/**
 * The workflow a PNG carries: `{workflow}` (UI format) when it has one,
 * else `{prompt}` (API format), else null.
 */
export function workflowFromPng(buffer) {
  const chunks = readPngTextChunks(buffer);
  if (chunks.workflow) return { workflow: JSON.parse(chunks.workflow) };
  if (chunks.prompt) return { prompt: JSON.parse(chunks.prompt) };
  return null;
}
