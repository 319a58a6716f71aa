import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { MessageStore } from '../store/types.js';
import type { HostPolicy } from './host-check.js';

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
  /** Called after a message was deleted through the API, to publish mail.deleted. */
  onDelete?: (id: string) => void;
  /** The app's metrics; a private set is created when absent (tests). */
  metrics?: Metrics;
  /**
   * Which Host headers are served (DNS-rebinding defence): config http.host and
   * http.allowed_hosts. Absent (tests): loopback-bound, no extra names.
   */
  hostPolicy?: HostPolicy;
}

/** HttpDeps after createHttpServer filled in the defaults. */
export type ResolvedHttpDeps = HttpDeps & { metrics: Metrics; hostPolicy: HostPolicy };
