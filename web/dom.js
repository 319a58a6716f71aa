// Small DOM helpers. Everything from a message (subject, names, headers, bodies) is hostile:
// it only ever goes into the page as text (textContent, attribute values via setAttribute),
// never through innerHTML.

/**
 * el('a', { href: '#x', class: 'c' }, 'text', child) builds an element. Attributes are set
 * with setAttribute, string children become text nodes; null/undefined/false children are
 * skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** "1.2 KB" style sizes (decimal units, like mail clients). */
export function formatSize(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '';
  if (bytes < 1000) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** Time of day for today's mail, the date otherwise; the full timestamp goes in a title. */
export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' });
}

/** "Name <address>" for an address object from the event. */
export function formatAddress(a) {
  if (!a) return '';
  if (a.name && a.address) return `${a.name} <${a.address}>`;
  return a.name || a.address || '';
}

/** The spam badge: a short label and a class, or null when there is nothing to say. */
export function spamBadge(spam) {
  if (!spam) return null;
  const score = typeof spam.score === 'number' ? spam.score.toFixed(1) : null;
  switch (spam.status) {
    case 'spam':
      return el('span', { class: 'badge spam', title: `Spam, score ${score}` }, `spam ${score ?? ''}`.trim());
    case 'ham':
      return el('span', { class: 'badge ham', title: `Not spam, score ${score}` }, score ?? 'ham');
    case 'error':
      return el('span', { class: 'badge muted', title: 'spamd could not score this message' }, 'unscored');
    default:
      return null;
  }
}
