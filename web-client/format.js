// Message bodies as DOM nodes: links (http/https only), **bold**, _italic_, `code`, ``` blocks ```, > quotes, @mentions.
//
// Built with createElement and text nodes only, never innerHTML: whatever a body holds stays text
// unless one of these few rules makes it an element, and no rule copies user text into anything
// but a text node, an href checked to be http(s), or a data attribute. Nothing inside code is
// formatted or linked. Line breaks stay "\n" text in a `white-space: pre-wrap` body, so a plain
// body's textContent is the body itself.

import { h } from './dom.js';

const FENCE = /^\s*```[^`]*$/; // opens a block (a language tag may follow); "```x```" is inline
const QUOTE = /^> ?/;

// One pass over a line finds the earliest of these; at the same position the first listed wins
// (code before links before emphasis), so a URL's `_` or `*` never starts italics.
const INLINE = new RegExp([
  '```(?<code3>[^`]+?)```',
  '`(?<code>[^`]+)`',
  '(?<url>\\bhttps?:\\/\\/[^\\s<>"]+)',
  '\\*\\*(?<bold>\\S(?:.*?\\S)?)\\*\\*',
  '(?<![*\\w])\\*(?<em>[^\\s*](?:.*?[^\\s*])?)\\*(?![*\\w])',
  '(?<![A-Za-z0-9_])_(?<em2>[^\\s_](?:.*?[^\\s_])?)_(?![A-Za-z0-9_])',
  '(?<![\\w.@/-])@(?<mention>[A-Za-z0-9_.-]{1,32})',
].join('|'), 'gu');

/**
 * The nodes of a message body for the `.body` element. `me` is our name: a mention of us is
 * marked `mention me`.
 */
export function formatBody(body, me) {
  const nodes = [];
  const lines = String(body).split('\n');
  let para = []; // lines of the current plain paragraph
  const flushPara = () => {
    if (!para.length) return;
    para.forEach((line, i) => {
      if (i) nodes.push('\n');
      nodes.push(...inline(line, me));
    });
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (FENCE.test(line)) {
      flushPara();
      const code = [];
      for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
      nodes.push(h('pre', { class: 'code-block' }, h('code', null, code.join('\n'))));
    } else if (QUOTE.test(line)) {
      flushPara();
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].replace(QUOTE, ''));
      i--;
      const block = h('blockquote');
      quoted.forEach((q, n) => {
        if (n) block.append('\n');
        block.append(...inline(q, me));
      });
      nodes.push(block);
    } else {
      para.push(line);
    }
  }
  flushPara();
  return nodes;
}

/** One line's inline nodes: text, code, links, bold, italics, mentions (emphasis nests). */
function inline(text, me) {
  const out = [];
  let at = 0;
  INLINE.lastIndex = 0;
  for (let m = INLINE.exec(text); m; m = INLINE.exec(text)) {
    const g = m.groups;
    let end = m.index + m[0].length;
    let node;
    if (g.code3 !== undefined || g.code !== undefined) node = h('code', null, g.code3 ?? g.code);
    else if (g.url !== undefined) {
      const url = trimUrl(g.url);
      end = m.index + url.length;
      node = link(url);
    } else if (g.bold !== undefined) node = h('strong', null, inline(g.bold, me));
    else if (g.em !== undefined || g.em2 !== undefined) node = h('em', null, inline(g.em ?? g.em2, me));
    else {
      const name = g.mention.replace(/[.-]+$/, ''); // "@bob." at the end of a sentence
      end = m.index + 1 + name.length;
      node = name ? mention(name, me) : null;
    }
    INLINE.lastIndex = end; // the nested calls above moved it
    if (!node) continue;
    if (m.index > at) out.push(text.slice(at, m.index));
    out.push(node);
    at = end;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

/** A URL without the punctuation that usually ends the sentence around it. */
function trimUrl(url) {
  let out = url.replace(/[.,;:!?'*_]+$/, '');
  while (out.endsWith(')') && (out.match(/\(/g) || []).length < (out.match(/\)/g) || []).length) {
    out = out.slice(0, -1).replace(/[.,;:!?'*_]+$/, '');
  }
  return out;
}

/** A link to an http(s) URL, or the text itself when it does not parse as one. */
function link(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return text;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return text;
  return h('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer', class: 'link' }, text);
}

function mention(name, me) {
  const mine = Boolean(me) && name.toLowerCase() === me.toLowerCase();
  return h('span', { class: mine ? 'mention me' : 'mention', dataset: { user: name } }, `@${name}`);
}

/** Does `body` mention `me` (outside code)? For notifications. */
export function mentions(body, me) {
  if (!me) return false;
  const probe = h('div', null, formatBody(body, me));
  return Boolean(probe.querySelector('.mention.me'));
}
