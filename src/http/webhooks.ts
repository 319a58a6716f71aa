/** /api/v1/webhooks: configured webhooks and their deliveries, with every attempt. */
import { DeliveryQueryError, type DeliveryListQuery, type DeliveryStatus } from '../webhooks/types.js';
import type { HttpDeps } from './deps.js';
import { badRequest, notFound } from './errors.js';
import { pathParam, queryParam, type RouteHandler } from './request.js';

/** Digits only, so "1e2" or " 5" are errors rather than numbers (the range check is the view's). */
const LIMIT_PATTERN = /^[0-9]{1,6}$/;

export function listWebhooks(deps: HttpDeps): RouteHandler {
  return async () => ({ items: deps.webhooks?.webhooks() ?? [] });
}

export function listDeliveries(deps: HttpDeps): RouteHandler {
  return async (request) => {
    const query: DeliveryListQuery = {};
    const given = (name: string): string | undefined => {
      const v = queryParam(request, name);
      return v === undefined || v === '' ? undefined : v;
    };
    const limit = given('limit');
    if (limit !== undefined) query.limit = LIMIT_PATTERN.test(limit) ? Number(limit) : NaN;
    const webhook = given('webhook');
    if (webhook !== undefined) query.webhook = webhook;
    const status = given('status');
    if (status !== undefined) query.status = status as DeliveryStatus; // checked by the view
    const event = given('event');
    if (event !== undefined) query.event = event;
    const message = given('message');
    if (message !== undefined) query.eventId = message;
    const before = given('before');
    if (before !== undefined) query.before = before;
    if (!deps.webhooks) {
      if (query.limit !== undefined && (!Number.isInteger(query.limit) || query.limit < 1)) throw badRequest('limit must be a positive integer');
      return { items: [], next: null };
    }
    try {
      return deps.webhooks.deliveries(query);
    } catch (err) {
      if (err instanceof DeliveryQueryError) throw badRequest(err.message);
      throw err;
    }
  };
}

export function getDelivery(deps: HttpDeps): RouteHandler {
  return async (request) => {
    const found = deps.webhooks?.delivery(pathParam(request, 'id')) ?? null;
    if (!found) throw notFound('delivery not found');
    return found;
  };
}
