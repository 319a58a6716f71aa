// The mailwire viewer: a live message list, a message view, search, a recipient filter,
// delete, and disposable addresses. Plain modules, no build step. Mail content is hostile
// and is only ever inserted as text (dom.js).
import { renderMessage } from './detail.js';
import { el, formatAddress, formatSize, formatTime, spamBadge } from './dom.js';
import { LiveFeed } from './feed.js';

const API = '/api/v1';
/** One page of the list; older pages on demand. */
const PAGE = 50;
/** Typing in the search box reloads the list after this pause, not on every key. */
const SEARCH_DEBOUNCE_MS = 250;
/** A local part of 16 random bytes: 128 bits, 26 base32 characters. Unguessable. */
const DISPOSABLE_BYTES = 16;

const $ = (id) => document.getElementById(id);

const state = {
  info: { disposableDomain: 'mailwire.test', pollIntervalMs: 3000, feed: `${API}/events` },
  q: '',
  rcpt: '',
  inbox: false, // the rcpt filter is a disposable address made here
  items: [], // summaries, newest first (ids are ULIDs: newest = largest)
  next: null, // cursor of the next older page
  selected: null, // id of the open message
  tab: null, // the tab last chosen, kept across messages
  listGeneration: 0, // drops responses of superseded list loads
};

const feed = new LiveFeed({
  path: state.info.feed,
  pollIntervalMs: state.info.pollIntervalMs,
  onEvent: handleFrame,
  onMode: showMode,
  refresh: () => refreshList(),
  newestId: () => state.items[0]?.id ?? null,
});

// ---------------------------------------------------------------------------------------
// Data

async function api(path, init) {
  const res = await fetch(`${API}${path}`, { ...init, headers: { accept: 'application/json', ...init?.headers } });
  if (!res.ok && res.status !== 204) {
    let message = `HTTP ${res.status}`;
    try {
      const body = await res.json();
      if (typeof body.message === 'string') message = body.message;
    } catch {
      // Not JSON: keep the status.
    }
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return res.status === 204 ? null : res.json();
}

function listQuery(before) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.q) params.set('q', state.q);
  if (state.rcpt) params.set('rcpt', state.rcpt);
  if (before) params.set('before', before);
  return `/messages?${params}`;
}

/** A list row from a summary (REST) or a full event (feed). */
function toSummary(x) {
  if (x.envelope) {
    return {
      id: x.id,
      receivedAt: x.receivedAt,
      mailFrom: x.envelope.mailFrom,
      rcptTo: x.envelope.rcptTo,
      from: x.from,
      subject: x.subject,
      size: x.size,
      spam: { status: x.spam.status, score: x.spam.score },
      attachments: x.attachments.length,
    };
  }
  return x;
}

/** The store's search, approximated for live events: subject, from and to, case-insensitive. */
/**
 * Whether a live event belongs in the list as filtered: the same test as the server's list
 * (src/store/writer.ts, search_text): the query is a substring of the subject, the envelope
 * sender, From, To and Cc written as "Name <address>", and the envelope recipients.
 */
function matchesFilters(event) {
  const { rcptTo, mailFrom } = event.envelope;
  if (state.rcpt && !rcptTo.some((r) => r.toLowerCase() === state.rcpt.toLowerCase())) return false;
  if (!state.q) return true;
  const addresses = (list) => (list ?? []).map((a) => (a.name ? `${a.name} <${a.address}>` : a.address)).join(', ');
  const text = [event.subject ?? '', mailFrom, addresses(event.from), addresses([...(event.to ?? []), ...(event.cc ?? [])]), rcptTo.join(', ')].join('\n');
  return text.toLowerCase().includes(state.q.toLowerCase());
}

/** The first page for the current filters; then the feed follows from its newest message. */
async function loadList() {
  const generation = ++state.listGeneration;
  feed.stop();
  try {
    const page = await api(listQuery());
    if (generation !== state.listGeneration) return;
    state.items = page.items;
    state.next = page.next;
    renderList();
    showError(null);
  } catch (err) {
    if (generation !== state.listGeneration) return;
    showError(`Could not load messages: ${err.message}`);
  }
  if (generation === state.listGeneration) feed.start(state.rcpt);
}

/**
 * Merge the first page into the list (polling, and gaps after a reconnect): new messages are
 * added, and a message that should be in the page's range but is not was deleted.
 */
async function refreshList() {
  const generation = state.listGeneration;
  let page;
  try {
    page = await api(listQuery());
  } catch (err) {
    showError(`Could not refresh messages: ${err.message}`);
    return;
  }
  if (generation !== state.listGeneration) return;
  showError(null);
  const ids = new Set(page.items.map((s) => s.id));
  // A row the page lacks was deleted, unless it is older than the page: the list is in commit
  // order and ids in order of arrival, which a burst of mail can mix up near the page's end.
  // A page that is not full covers everything; for a full one, the server is asked about the
  // rows that arrived after the page's oldest (a few at most, outside a burst).
  const oldest = page.next === null ? '' : (page.items[page.items.length - 1]?.id ?? '');
  const missing = state.items.filter((s) => s.id >= oldest && !ids.has(s.id)).map((s) => s.id);
  const gone = page.next === null ? missing : await deletedOf(missing);
  if (generation !== state.listGeneration) return;
  for (const id of gone) removeMessage(id);
  for (const s of page.items) addMessage(s, false);
}

/** Which of these messages the server no longer has (at most a page's worth are asked about). */
async function deletedOf(ids) {
  const answers = await Promise.all(
    ids.slice(0, 50).map(async (id) => {
      const res = await fetch(`/api/v1/messages/${encodeURIComponent(id)}`, { method: 'HEAD' }).catch(() => null);
      return res?.status === 404 ? id : null;
    }),
  );
  return answers.filter((id) => id !== null);
}

async function loadOlder() {
  if (!state.next) return;
  const generation = state.listGeneration;
  const page = await api(listQuery(state.next));
  if (generation !== state.listGeneration) return;
  for (const s of page.items) addMessage(s, false);
  state.next = page.next;
  $('more').hidden = state.next === null;
}

function handleFrame(frame) {
  if (frame.type === 'mail.received' && frame.data?.id) {
    if (matchesFilters(frame.data)) addMessage(toSummary(frame.data), true);
  } else if (frame.type === 'mail.deleted' && frame.data?.id) {
    removeMessage(frame.data.id);
  }
}

// ---------------------------------------------------------------------------------------
// List

function addMessage(summary, fresh) {
  if (state.items.some((s) => s.id === summary.id)) return;
  let at = state.items.findIndex((s) => s.id < summary.id);
  if (at === -1) at = state.items.length;
  state.items.splice(at, 0, summary);
  const row = listRow(summary);
  if (fresh) row.classList.add('fresh');
  const list = $('list');
  list.insertBefore(row, list.children[at] ?? null);
  $('list-empty').hidden = true;
}

function removeMessage(id) {
  const at = state.items.findIndex((s) => s.id === id);
  if (at !== -1) {
    state.items.splice(at, 1);
    document.querySelector(`#list li[data-id="${CSS.escape(id)}"]`)?.remove();
  }
  $('list-empty').hidden = state.items.length > 0;
  if (state.selected === id) {
    $('detail').replaceChildren(el('p', { class: 'empty' }, 'This message was deleted.'));
    state.selected = null;
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    document.body.classList.remove('show-detail');
  }
}

function renderList() {
  $('list').replaceChildren(...state.items.map(listRow));
  $('list-empty').hidden = state.items.length > 0;
  $('more').hidden = state.next === null;
  markSelected();
}

function listRow(s) {
  const sender = s.from[0] ? s.from[0].name || s.from[0].address : s.mailFrom || '<>';
  const link = el(
    'a',
    { href: `#${s.id}`, title: s.from.map(formatAddress).join(', ') || s.mailFrom },
    el('span', { class: 'from' }, sender),
    el('time', { datetime: s.receivedAt, title: new Date(s.receivedAt).toLocaleString() }, formatTime(s.receivedAt)),
    el('span', { class: 'subject' }, s.subject ?? '(no subject)'),
    el(
      'span',
      { class: 'meta' },
      el('span', { class: 'to' }, s.rcptTo.join(', ')),
      s.attachments > 0 ? el('span', { class: 'clip', title: `${s.attachments} attachment(s)` }, String(s.attachments)) : null,
      el('span', { class: 'size' }, formatSize(s.size)),
      spamBadge(s.spam),
    ),
  );
  return el('li', { 'data-id': s.id, class: s.spam?.status === 'spam' ? 'is-spam' : null }, link);
}

function markSelected() {
  for (const li of $('list').children) li.classList.toggle('selected', li.dataset.id === state.selected);
}

// ---------------------------------------------------------------------------------------
// Message view

async function openMessage(id) {
  state.selected = id;
  markSelected();
  document.body.classList.add('show-detail');
  const detail = $('detail');
  detail.replaceChildren(el('p', { class: 'empty' }, 'Loading…'));
  try {
    const event = await api(`/messages/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;
    detail.replaceChildren(
      renderMessage(
        event,
        {
          onBack: closeMessage,
          onDelete: () => deleteMessage(id),
          onTab: (tab) => (state.tab = tab),
        },
        state.tab,
      ),
    );
    detail.scrollTop = 0;
    // Keyboard and screen-reader users land on the message, not back in the list.
    detail.querySelector('.message-subject')?.focus({ preventScroll: true });
  } catch (err) {
    if (state.selected !== id) return;
    detail.replaceChildren(el('p', { class: 'empty' }, err.status === 404 ? 'This message does not exist (deleted?).' : `Could not load the message: ${err.message}`));
  }
}

function closeMessage() {
  state.selected = null;
  markSelected();
  document.body.classList.remove('show-detail');
  $('detail').replaceChildren(el('p', { class: 'empty' }, 'Select a message.'));
  if (location.hash) history.pushState(null, '', location.pathname + location.search);
}

async function deleteMessage(id) {
  try {
    await api(`/messages/${encodeURIComponent(id)}`, { method: 'DELETE' });
  } catch (err) {
    if (err.status !== 404) {
      showError(`Could not delete: ${err.message}`);
      return;
    }
  }
  // Focus goes to the row that takes the deleted one's place (or the one before it), not to
  // the page: the user goes on from where they were.
  const at = state.items.findIndex((s) => s.id === id);
  removeMessage(id);
  const rows = $('list').children;
  (rows[at] ?? rows[at - 1])?.querySelector('a')?.focus();
}

function route() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (/^[0-9A-HJKMNP-TV-Z]{26}$/.test(id)) {
    if (id !== state.selected) void openMessage(id);
  } else if (state.selected) {
    closeMessage();
  }
}

// ---------------------------------------------------------------------------------------
// Filters, disposable addresses, status

/** Keeps the filters in the URL (?q=, ?rcpt=, ?inbox=1), so a reload or a bookmark returns to them. */
function saveFilters() {
  const params = new URLSearchParams();
  if (state.q) params.set('q', state.q);
  if (state.rcpt) params.set('rcpt', state.rcpt);
  if (state.inbox) params.set('inbox', '1');
  const query = params.toString();
  history.replaceState(null, '', `${location.pathname}${query ? `?${query}` : ''}${location.hash}`);
}

function applyFilters({ q = state.q, rcpt = state.rcpt, inbox = false } = {}) {
  state.q = q.trim();
  state.rcpt = rcpt.trim();
  state.inbox = inbox && state.rcpt !== '';
  $('q').value = state.q;
  $('rcpt').value = state.rcpt;
  $('inbox').hidden = !state.inbox;
  $('inbox-address').textContent = state.inbox ? state.rcpt : '';
  document.body.classList.toggle('in-inbox', state.inbox);
  saveFilters();
  void loadList();
}

function randomLocalPart() {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'; // RFC 4648 base32, lower case
  const bytes = crypto.getRandomValues(new Uint8Array(DISPOSABLE_BYTES));
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

function newAddress() {
  applyFilters({ q: '', rcpt: `${randomLocalPart()}@${state.info.disposableDomain}`, inbox: true });
}

async function copyAddress() {
  const address = state.rcpt;
  const button = $('copy-address');
  try {
    await navigator.clipboard.writeText(address);
    button.textContent = 'Copied';
  } catch {
    // No clipboard outside a secure context: select the text for a manual copy.
    getSelection()?.selectAllChildren($('inbox-address'));
    button.textContent = 'Press Ctrl+C';
  }
  setTimeout(() => (button.textContent = 'Copy'), 1500);
}

const MODE_TEXT = {
  connecting: ['connecting', 'Connecting to the live feed'],
  live: ['live', 'New mail appears as it arrives'],
  reconnecting: ['reconnecting', 'The live feed was lost; reconnecting'],
  polling: ['polling', 'The live feed cannot connect (a proxy?); checking for new mail every few seconds'],
  stopped: ['…', ''],
};

function showMode(mode) {
  const [text, title] = MODE_TEXT[mode] ?? [mode, ''];
  const status = $('status');
  status.dataset.mode = mode;
  status.textContent = text;
  status.title = title;
}

function showError(message) {
  const box = $('error');
  box.hidden = message === null;
  box.textContent = message ?? '';
}

// ---------------------------------------------------------------------------------------
// Start

async function main() {
  try {
    const info = await api('/info');
    state.info = { ...state.info, ...info };
    feed.o.pollIntervalMs = state.info.pollIntervalMs;
    feed.o.path = state.info.feed;
  } catch {
    // An older server without /info: the defaults above work.
  }

  let searchTimer = null;
  $('q').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => applyFilters({ q: $('q').value, inbox: state.inbox && $('rcpt').value.trim() === state.rcpt }), SEARCH_DEBOUNCE_MS);
  });
  $('rcpt').addEventListener('change', () => applyFilters({ rcpt: $('rcpt').value }));
  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(searchTimer);
    applyFilters({ q: $('q').value, rcpt: $('rcpt').value, inbox: state.inbox && $('rcpt').value.trim() === state.rcpt });
  });
  $('new-address').addEventListener('click', newAddress);
  $('copy-address').addEventListener('click', () => void copyAddress());
  $('leave-inbox').addEventListener('click', () => applyFilters({ q: '', rcpt: '' }));
  $('more').addEventListener('click', () => void loadOlder().catch((err) => showError(`Could not load older messages: ${err.message}`)));
  window.addEventListener('hashchange', route);

  const params = new URLSearchParams(location.search);
  applyFilters({ q: params.get('q') ?? '', rcpt: params.get('rcpt') ?? '', inbox: params.get('inbox') === '1' });
  route();
}

void main();
