/** /api/v1/messages: list, read, raw bytes, attachments, delete. */
import { Readable } from 'node:stream';
import { isMessageId } from '../events/id.js';
import { StoreQueryError, type ListQuery } from '../store/types.js';
import type { HttpDeps } from './deps.js';
import { attachmentDisposition, downloadContentType, safeFilename } from './download.js';
import { badRequest, notFound } from './errors.js';
import { openRegularFile, pathParam, queryParam, sendFile, type RouteHandler } from './request.js';

/** Digits only, so "1e2", "0x10", " 5" and "5.0" are errors rather than numbers. */
const LIMIT_PATTERN = /^[0-9]{1,6}$/;
/** Attachment indexes are small non-negative integers with no leading zeros. */
const INDEX_PATTERN = /^(?:0|[1-9][0-9]{0,5})$/;

function messageId(request: Parameters<RouteHandler>[0]): string {
  const id = pathParam(request, 'id');
  // Not a ULID is the same answer as an unknown ULID: there is no such message.
  if (!isMessageId(id)) throw notFound('message not found');
  return id;
}

export function listMessages(deps: HttpDeps): RouteHandler {
  return async (request) => {
    const query: ListQuery = {};
    const limit = queryParam(request, 'limit');
    if (limit !== undefined && limit !== '') {
      // The range check (1..MAX_LIST_LIMIT) is the store's; this only makes it a number.
      query.limit = LIMIT_PATTERN.test(limit) ? Number(limit) : NaN;
    }
    const before = queryParam(request, 'before');
    if (before !== undefined && before !== '') query.before = before;
    const q = queryParam(request, 'q');
    if (q !== undefined && q !== '') query.q = q;
    const rcpt = queryParam(request, 'rcpt');
    if (rcpt !== undefined && rcpt !== '') query.rcpt = rcpt;
    try {
      return deps.store.list(query);
    } catch (err) {
      if (err instanceof StoreQueryError) throw badRequest(err.message);
      throw err;
    }
  };
}

export function getMessage(deps: HttpDeps): RouteHandler {
  return async (request) => {
    const event = deps.store.get(messageId(request));
    if (!event) throw notFound('message not found');
    return event;
  };
}

export function getRawMessage(deps: HttpDeps): RouteHandler {
  return async (request, reply) => {
    const id = messageId(request);
    const raw = deps.store.raw(id);
    // A small message's bytes come from its row; a larger one's from its file.
    const file = raw === null ? null : raw.bytes ? { stream: Readable.from([raw.bytes]), size: raw.bytes.length } : await openRegularFile(raw.path);
    if (!file) throw notFound('message not found');
    // A download named after the id; fetch() from the viewer ignores the disposition.
    reply.header('content-disposition', attachmentDisposition(`${id}.eml`));
    return sendFile(reply, file, 'message/rfc822');
  };
}

export function getAttachment(deps: HttpDeps): RouteHandler {
  return async (request, reply) => {
    const id = messageId(request);
    const indexText = pathParam(request, 'index');
    const found = INDEX_PATTERN.test(indexText) ? deps.store.attachment(id, Number(indexText)) : null;
    if (!found) throw notFound(deps.store.get(id) === null ? 'message not found' : 'attachment not found');
    const file = await openRegularFile(found.path);
    if (!file) {
      deps.logger.warn({ id, index: found.meta.index }, 'attachment in the event but its file is missing');
      throw notFound('attachment not found');
    }
    const name = safeFilename(found.meta.filename, `attachment-${found.meta.index}`);
    reply.header('content-disposition', attachmentDisposition(name));
    return sendFile(reply, file, downloadContentType(found.meta.contentType));
  };
}

export function deleteMessage(deps: HttpDeps): RouteHandler {
  return async (request, reply) => {
    const id = messageId(request);
    if (!(await deps.store.delete(id))) throw notFound('message not found');
    try {
      deps.onDelete?.(id);
    } catch (err) {
      // The message is gone either way; a failing publisher must not turn that into a 500.
      deps.logger.error({ err, id }, 'onDelete failed');
    }
    return reply.code(204).send();
  };
}
