/**
 * The subset of Markdown that workflow notes use, parsed into blocks the canvas can draw:
 * headings (#, ##, ###), bullet and numbered list items, fenced and indented code, block
 * quotes, horizontal rules and paragraphs. Inline marks (**bold**, *italic*, `code`, links
 * [text](url), <br/>) become plain text spans with a style.
 */

/** `[{text, bold, italic, code}]` spans of one line of inline Markdown. */
export function inlineSpans(text) {
  const spans = [];
  const source = String(text).replace(/<br\s*\/?>/gi, '\n').replace(/!\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]+)\]\([^)]*\)/g, '$1');
  const pattern = /(\*\*|__)(.+?)\1|(\*|_)(.+?)\3|`([^`]+)`/g;
  let last = 0;
  for (const m of source.matchAll(pattern)) {
    if (m.index > last) spans.push({ text: source.slice(last, m.index) });
    if (m[2] !== undefined) spans.push({ text: m[2], bold: true });
    else if (m[4] !== undefined) spans.push({ text: m[4], italic: true });
    else spans.push({ text: m[5], code: true });
    last = m.index + m[0].length;
  }
  if (last < source.length) spans.push({ text: source.slice(last) });
  return spans.filter((s) => s.text !== '');
}

/** Blocks `{kind: 'h1'|'h2'|'h3'|'p'|'li'|'code'|'quote'|'rule', spans, marker?}` of a Markdown text. */
export function markdownBlocks(text) {
  const blocks = [];
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) blocks.push({ kind: 'p', spans: inlineSpans(paragraph.join(' ')) });
    paragraph = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*```/.test(line)) {
      flush();
      const code = [];
      for (i += 1; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
      for (const c of code) blocks.push({ kind: 'code', spans: [{ text: c, code: true }] });
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
    const numbered = /^\s*(\d+)[.)]\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      blocks.push({ kind: `h${Math.min(3, heading[1].length)}`, spans: inlineSpans(heading[2]) });
    } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      blocks.push({ kind: 'rule', spans: [] });
    } else if (bullet) {
      flush();
      blocks.push({ kind: 'li', marker: '•', spans: inlineSpans(bullet[1]) });
    } else if (numbered) {
      flush();
      blocks.push({ kind: 'li', marker: `${numbered[1]}.`, spans: inlineSpans(numbered[2]) });
    } else if (/^\s*>/.test(line)) {
      flush();
      blocks.push({ kind: 'quote', spans: inlineSpans(line.replace(/^\s*>\s?/, '')) });
    } else if (/^( {4}|\t)/.test(line)) {
      flush();
      blocks.push({ kind: 'code', spans: [{ text: line.replace(/^( {4}|\t)/, ''), code: true }] });
    } else if (line.trim() === '') {
      flush();
    } else {
      paragraph.push(line.trim());
    }
  }
  flush();
  return blocks;
}
