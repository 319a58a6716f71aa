/**
 * Prometheus metrics: the one module that imports prom-client. The app creates one Metrics
 * and hands it to whoever counts something (SMTP, pipeline, HTTP); GET /metrics renders it.
 * A registry of our own, not prom-client's global one, so two apps in one process (tests)
 * never share or collide on counters.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export type { Counter, Gauge, Histogram };

/** Every metric name is ours and says so; checked at registration, not discovered in Grafana. */
const NAME_PATTERN = /^mailwire_[a-z][a-z0-9_]*$/;

export interface Metrics {
  /** The Content-Type of render()'s output. */
  readonly contentType: string;
  /**
   * The counter with this name, created on first use. Asking again with the same labels
   * returns the same counter, so independent modules can each declare what they count.
   */
  counter<L extends string = string>(name: string, help: string, labelNames?: readonly L[]): Counter<L>;
  /** Like counter(); `buckets` in the metric's unit (use seconds for durations). */
  histogram<L extends string = string>(name: string, help: string, labelNames?: readonly L[], buckets?: number[]): Histogram<L>;
  /** Like counter(), for a value that goes up and down (connected clients). */
  gauge<L extends string = string>(name: string, help: string, labelNames?: readonly L[]): Gauge<L>;
  /** Prometheus text exposition format. */
  render(): Promise<string>;
}

export interface MetricsOptions {
  /** Process metrics (CPU, memory, event loop lag, file descriptors, GC). Default true. */
  processMetrics?: boolean;
}

function sameLabels(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((l, i) => l === b[i]);
}

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  // Unprefixed (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...): the names the
  // standard Node.js dashboards and alerts expect.
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });

  const declared = new Map<string, { kind: 'counter' | 'histogram' | 'gauge'; labels: readonly string[]; metric: unknown }>();

  function existing(name: string, kind: 'counter' | 'histogram' | 'gauge', labels: readonly string[]): unknown {
    if (!NAME_PATTERN.test(name)) throw new Error(`metric name ${JSON.stringify(name)} must match ${String(NAME_PATTERN)}`);
    const prior = declared.get(name);
    if (!prior) return undefined;
    if (prior.kind !== kind || !sameLabels(prior.labels, labels)) {
      throw new Error(`metric ${name} already declared as a ${prior.kind} with labels [${prior.labels.join(', ')}]`);
    }
    return prior.metric;
  }

  return {
    contentType: registry.contentType,

    counter<L extends string = string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
      const prior = existing(name, 'counter', labelNames);
      if (prior) return prior as Counter<L>;
      const metric = new Counter<L>({ name, help, labelNames, registers: [registry] });
      declared.set(name, { kind: 'counter', labels: labelNames, metric });
      return metric;
    },

    histogram<L extends string = string>(name: string, help: string, labelNames: readonly L[] = [], buckets?: number[]): Histogram<L> {
      const prior = existing(name, 'histogram', labelNames);
      if (prior) return prior as Histogram<L>;
      const metric = new Histogram<L>({ name, help, labelNames, registers: [registry], ...(buckets ? { buckets } : {}) });
      declared.set(name, { kind: 'histogram', labels: labelNames, metric });
      return metric;
    },

    gauge<L extends string = string>(name: string, help: string, labelNames: readonly L[] = []): Gauge<L> {
      const prior = existing(name, 'gauge', labelNames);
      if (prior) return prior as Gauge<L>;
      const metric = new Gauge<L>({ name, help, labelNames, registers: [registry] });
      declared.set(name, { kind: 'gauge', labels: labelNames, metric });
      return metric;
    },

    render(): Promise<string> {
      return registry.metrics();
    },
  };
}
