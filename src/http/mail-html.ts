/**
 * GET /api/v1/messages/:id/html[?remote=1]: a message's HTML body as a document of its own,
 * for the viewer's sandboxed iframe. The defence is the response's policy (mailHtmlHeaders:
 * CSP sandbox, no script, nothing remote unless asked), not a sanitiser: the HTML is served
 * as the sender wrote it, except that cid: references become URLs of the message's own parts
 * and links open in a new tab.
 */
import { isMessageId } from '../events/id.js';
import type { AttachmentMeta } from '../events/types.js';
import type { HttpDeps } from './deps.js';
import { badRequest, notFound } from './errors.js';
import { pathParam, queryParam, type RouteHandler } from './request.js';
import { mailHtmlHeaders } from './security.js';

/** cid:<content-id> in an attribute or a CSS url(); ends at a quote, space, bracket or paren. */
const CID_REFERENCE = /\bcid:([^\s"'()<>\\]{1,998})/gi;
/** A doctype must stay first, or the page drops to quirks mode differently from a mail client. */
const LEADING_DOCTYPE = /^\uFEFF?\s*<!doctype[^>]{0,200}>/i;

function normaliseContentId(cid: string): string {
  return cid.replace(/^<|>$/g, '').toLowerCase();
}

/** `cid:` URLs in `html` rewritten to the attachment URLs of message `id`; unknown ones stay. */
export function rewriteCidReferences(html: string, id: string, attachments: readonly AttachmentMeta[]): string {
  const byCid = new Map<string, number>();
  for (const a of attachments) if (a.contentId) byCid.set(normaliseContentId(a.contentId), a.index);
  if (byCid.size === 0) return html;
  return html.replace(CID_REFERENCE, (whole, ref: string) => {
    let cid = ref;
    try {
      cid = decodeURIComponent(ref);
    } catch {
      // A malformed %-escape: match the reference as written.
    }
    const index = byCid.get(normaliseContentId(cid));
    return index === undefined ? whole : `/api/v1/messages/${id}/attachments/${index}`;
  });
}

/**
 * The served document: the rewritten HTML with `<base target="_blank">` first (after a
 * doctype), so a click on a link opens a new tab instead of loading the site in the frame.
 * A base without href is not subject to base-uri, and the mail's own <base> is (blocked).
 */
export function mailHtmlDocument(html: string, id: string, attachments: readonly AttachmentMeta[]): string {
  const rewritten = rewriteCidReferences(html, id, attachments);
  const doctype = LEADING_DOCTYPE.exec(rewritten)?.[0] ?? '';
  return `${doctype}<base target="_blank">${rewritten.slice(doctype.length)}`;
}

export function getMessageHtml(deps: HttpDeps): RouteHandler {
  return async (request, reply) => {
    const id = pathParam(request, 'id');
    if (!isMessageId(id)) throw notFound('message not found');
    const remote = queryParam(request, 'remote');
    if (remote !== undefined && remote !== '0' && remote !== '1') throw badRequest('remote must be 0 or 1');
    const event = deps.store.get(id);
    if (!event) throw notFound('message not found');
    if (event.html === null) throw notFound('the message has no HTML body');
    reply.headers(mailHtmlHeaders(remote === '1'));
    return reply.header('content-type', 'text/html; charset=utf-8').send(mailHtmlDocument(event.html, id, event.attachments));
  };
}
