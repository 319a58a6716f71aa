// The message view: header block, attachments, and tabs for HTML, text, headers, raw source,
// envelope and spam report. Built with DOM calls only (see dom.js): the event is hostile.
import { el, formatAddress, formatSize, spamBadge } from './dom.js';

/** The raw tab shows at most this much of the source; the full file is a download away. */
const RAW_PREVIEW_BYTES = 2 * 1024 * 1024;

/** Does the HTML reference anything remote an image could load from (src, srcset, background, CSS url())? */
const REMOTE_REFERENCE = /(?:\b(?:src|srcset|background|poster)\s*=\s*["']?\s*|url\(\s*["']?\s*)(?:https?:)?\/\//i;

const api = (id) => `/api/v1/messages/${encodeURIComponent(id)}`;

/**
 * The view of one message. `actions.onDelete()` and `actions.onBack()` are the app's;
 * `tab` is the tab to open (the last one the user chose), when the message has it.
 */
export function renderMessage(event, actions, tab) {
  const tabs = [];
  if (event.html !== null) tabs.push(['html', 'HTML', () => htmlPanel(event)]);
  if (event.text !== null || event.html === null) tabs.push(['text', 'Text', () => textPanel(event)]);
  tabs.push(['headers', 'Headers', () => headersPanel(event)]);
  tabs.push(['raw', 'Raw', () => rawPanel(event)]);
  tabs.push(['envelope', 'Envelope', () => envelopePanel(event)]);
  tabs.push(['spam', 'Spam', () => spamPanel(event)]);

  const tabBar = el('div', { class: 'tabs', role: 'tablist' });
  const panel = el('div', { class: 'panel', role: 'tabpanel' });
  const select = (name) => {
    const found = tabs.find(([n]) => n === name) ?? tabs[0];
    for (const button of tabBar.children) {
      const selected = button.dataset.tab === found[0];
      button.setAttribute('aria-selected', String(selected));
      // Roving tabindex (WAI-ARIA tabs): Tab reaches the selected tab only; arrows move along.
      button.tabIndex = selected ? 0 : -1;
    }
    panel.replaceChildren(found[2]());
    actions.onTab?.(found[0]);
  };
  for (const [name, label] of tabs) {
    const button = el('button', { type: 'button', role: 'tab', 'data-tab': name }, label);
    button.addEventListener('click', () => select(name));
    tabBar.append(button);
  }
  tabBar.addEventListener('keydown', (e) => {
    const buttons = [...tabBar.children];
    const at = buttons.indexOf(document.activeElement);
    if (at === -1) return;
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: buttons.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const next = buttons[(to + buttons.length) % buttons.length];
    select(next.dataset.tab);
    next.focus();
  });

  const back = el('button', { type: 'button', class: 'back', title: 'Back to the list' }, '← Messages');
  back.addEventListener('click', () => actions.onBack());
  const del = el('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
  del.addEventListener('click', () => actions.onDelete());
  const raw = el('a', { class: 'button', href: `${api(event.id)}/raw`, download: `${event.id}.eml` }, 'Download .eml');

  const view = el(
    'article',
    { class: 'message', 'data-id': event.id },
    el('div', { class: 'toolbar' }, back, el('span', { class: 'spacer' }), raw, del),
    // Focused when the message opens (tabindex -1: focusable from script, not a Tab stop).
    el('h2', { class: 'message-subject', tabindex: '-1' }, event.subject ?? '(no subject)', ' ', spamBadge(event.spam)),
    summaryBlock(event),
    attachmentsBlock(event),
    event.parseError ? el('p', { class: 'notice' }, `This message could not be parsed: ${event.parseError}. The raw source is intact.`) : null,
    tabBar,
    panel,
  );
  select(tab);
  return view;
}

function summaryBlock(event) {
  const rows = [
    ['From', event.from.map(formatAddress).join(', ') || event.envelope.mailFrom || '<>'],
    ['To', event.to.map(formatAddress).join(', ') || event.envelope.rcptTo.join(', ')],
    event.cc.length ? ['Cc', event.cc.map(formatAddress).join(', ')] : null,
    event.replyTo.length ? ['Reply-To', event.replyTo.map(formatAddress).join(', ')] : null,
    ['Date', event.date ? new Date(event.date).toLocaleString() : '(none)'],
    ['Received', `${new Date(event.receivedAt).toLocaleString()} from ${event.envelope.remoteAddress}`],
    ['Size', formatSize(event.size)],
  ].filter(Boolean);
  return definitionList(rows, 'summary');
}

function attachmentsBlock(event) {
  if (event.attachments.length === 0) return null;
  return el(
    'ul',
    { class: 'attachments', 'aria-label': 'Attachments' },
    event.attachments.map((a) =>
      el(
        'li',
        {},
        el('a', { href: `${api(event.id)}/attachments/${a.index}`, download: a.filename ?? `attachment-${a.index}`, 'data-index': a.index }, a.filename ?? `attachment ${a.index}`),
        el('span', { class: 'muted' }, ` ${a.contentType}, ${formatSize(a.size)}`),
      ),
    ),
  );
}

/**
 * The HTML body in a sandboxed iframe loaded from the server, whose response carries the
 * real policy (CSP sandbox, no script, no remote loads). The attribute repeats it, so the
 * frame is sandboxed even before the response arrives. Remote images need a click.
 */
function htmlPanel(event) {
  const frame = el('iframe', {
    class: 'html-body',
    title: 'HTML body of the message',
    sandbox: 'allow-popups allow-popups-to-escape-sandbox',
    referrerpolicy: 'no-referrer',
    src: `${api(event.id)}/html`,
  });
  const parts = [];
  if (event.truncated.html) parts.push(el('p', { class: 'notice' }, 'The HTML body was longer than the server keeps; it is cut short. The raw source has all of it.'));
  if (REMOTE_REFERENCE.test(event.html)) {
    const allow = el('button', { type: 'button', 'data-action': 'remote-images' }, 'Load remote images');
    const bar = el('p', { class: 'notice remote' }, 'Remote images are blocked: loading them tells the sender you read this mail, and from where. ', allow);
    allow.addEventListener('click', () => {
      frame.src = `${api(event.id)}/html?remote=1`;
      bar.replaceChildren('Remote images are loaded for this message.');
    });
    parts.push(bar);
  }
  parts.push(frame);
  return el('div', {}, parts);
}

function textPanel(event) {
  if (event.text === null) return el('p', { class: 'empty' }, 'This message has no text body.');
  return el(
    'div',
    {},
    event.truncated.text ? el('p', { class: 'notice' }, 'The text body was cut short; the raw source has all of it.') : null,
    el('pre', { class: 'text-body' }, event.text),
  );
}

function headersPanel(event) {
  return el(
    'table',
    { class: 'headers' },
    el(
      'tbody',
      {},
      event.headers.map((h) => el('tr', {}, el('th', { scope: 'row' }, h.name), el('td', {}, h.value))),
    ),
  );
}

function rawPanel(event) {
  const pre = el('pre', { class: 'raw-body' }, 'Loading…');
  const panel = el('div', {}, pre);
  loadRaw(event.id)
    .then(({ text, cut }) => {
      pre.textContent = text;
      if (cut) panel.prepend(el('p', { class: 'notice' }, `Only the first ${formatSize(RAW_PREVIEW_BYTES)} are shown; download the .eml for all of it.`));
    })
    .catch((err) => {
      pre.textContent = `Could not load the raw source: ${err.message}`;
    });
  return panel;
}

/** The raw source as text, at most RAW_PREVIEW_BYTES of it (a 25 MB message would freeze the tab). */
async function loadRaw(id) {
  const res = await fetch(`${api(id)}/raw`);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const reader = res.body.getReader();
  const chunks = [];
  let size = 0;
  let cut = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= RAW_PREVIEW_BYTES) {
      cut = true;
      await reader.cancel();
      break;
    }
  }
  const bytes = new Uint8Array(Math.min(size, RAW_PREVIEW_BYTES));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.length - offset);
    bytes.set(part, offset);
    offset += part.length;
  }
  // Mail is mostly 7-bit; 8-bit parts in another charset show as replacement characters.
  return { text: new TextDecoder('utf-8').decode(bytes), cut };
}

function envelopePanel(event) {
  const e = event.envelope;
  return definitionList(
    [
      ['MAIL FROM', e.mailFrom || '<>'],
      ['RCPT TO', e.rcptTo.join(', ')],
      ['Client', `${e.remoteAddress} port ${e.remotePort}`],
      ['Client name', e.clientHostname || '(none)'],
      ['HELO', e.helo || '(none)'],
      ['TLS', e.tls ? `${e.tls.protocol} ${e.tls.cipher}` : 'none (plain text)'],
      ['AUTH', e.auth ? e.auth.user : 'none'],
      ['Message id', event.id],
      ['Message-ID', event.messageId ?? '(none)'],
      ['SHA-256', event.sha256],
      ...(event.hooks.length ? [['Hooks', event.hooks.map((h) => `${h.phase} ${h.name}: ${h.verdict} (${h.ms} ms)`).join('; ')]] : []),
      ...(event.tags?.length ? [['Tags', event.tags.join(', ')]] : []),
    ],
    'envelope',
  );
}

function spamPanel(event) {
  const s = event.spam;
  const head = definitionList(
    [
      ['Status', s.status],
      ['Score', s.score === null ? '(none)' : `${s.score} of ${s.threshold ?? '?'} needed for spam`],
      ...(s.reason ? [['Reason', s.reason]] : []),
    ],
    'spam-summary',
  );
  if (s.rules.length === 0) return el('div', {}, head, el('p', { class: 'empty' }, 'No rules fired.'));
  return el(
    'div',
    {},
    head,
    el(
      'table',
      { class: 'rules' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Score'), el('th', {}, 'Rule'), el('th', {}, 'Description'))),
      el(
        'tbody',
        {},
        s.rules.map((r) => el('tr', {}, el('td', { class: 'num' }, r.score.toFixed(1)), el('td', {}, el('code', {}, r.name)), el('td', {}, r.description))),
      ),
    ),
  );
}

function definitionList(rows, className) {
  return el(
    'dl',
    { class: className },
    rows.map(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]),
  );
}
