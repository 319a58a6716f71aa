import type { IncomingMessage } from 'node:http';
import type { AccessDecision } from '../auth/http-auth.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { MessageStore } from '../store/types.js';
import type { WebhooksView } from '../webhooks/types.js';
import type { SubmitService } from '../submit/submit.js';
import type { HostPolicy } from './host-check.js';
import type { ViewerSettings } from './info.js';

export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean | string>;
}

/** What the HTTP server is built from; app.ts provides it. */
export interface HttpDeps {
  store: MessageStore;
  logger: Logger;
  /** Whether the app can take mail now (listeners up, store writable, ...), for /readyz. */
  readiness: () => Readiness;
  /** The web viewer's files; without it, GET / is 404. */
  webDir?: string;
  /** The viewer's settings for GET /api/v1/info (config web:); defaults when absent (tests). */
  viewer?: ViewerSettings;
  /** Called after a message was deleted through the API, to publish mail.deleted. */
  onDelete?: (id: string) => void;
  /** Webhooks and their deliveries (GET /api/v1/webhooks...); absent when none is configured. */
  webhooks?: WebhooksView;
  /** The app's metrics; a private set is created when absent (tests). */
  metrics?: Metrics;
  /**
   * Which Host headers are served (DNS-rebinding defence): config http.host and
   * http.allowed_hosts. Absent (tests): loopback-bound, no extra names.
   */
  hostPolicy?: HostPolicy;
  /**
   * Access control (src/auth/http-auth.ts, config http.auth). Absent: every request is served.
   * /healthz, /readyz and POST /submit (which has Haineko's own checks) are never covered.
   */
  access?: { check(req: IncomingMessage): AccessDecision; readonly challenge: string };
  /** POST /submit (Haineko-compatible); absent (tests): /submit is 404. */
  submit?: SubmitService;
  /** Body limit of POST /submit in bytes (http/submit.ts submitBodyLimit); 64 KiB when absent. */
  submitBodyLimit?: number;
  /** http.allowed_origins: browser origins besides the server's own that may POST /submit (http/origin.ts). */
  allowedOrigins?: readonly string[];
}

/** HttpDeps after createHttpServer filled in the defaults. */
export type ResolvedHttpDeps = HttpDeps & { metrics: Metrics; hostPolicy: HostPolicy };
