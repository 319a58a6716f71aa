/** Adds X- headers at end of message: the spam verdict and the client that sent it. */
import type { Hook } from '../../src/hooks/api.js';

export default {
  name: 'add-header',
  eom(ctx) {
    const { status, score } = ctx.spam;
    ctx.addHeader('X-Mailwire-Spam', score === null ? status : `${status}, score=${score}`);
    ctx.addHeader('X-Mailwire-Client', `${ctx.session.clientHostname || 'unknown'} [${ctx.session.remoteAddress}]`);
  },
} satisfies Hook;
