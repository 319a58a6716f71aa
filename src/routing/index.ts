/** The Haineko tables and routing: what POST /submit, the relay mailers and the SMTP relay path use. */
export type { MailerName, Route, Routing } from './types.js';
export {
  createRouting,
  routingFromTables,
  TABLE_NAMES,
  type RoutingOptions,
  type RoutingTables,
  type TableName,
  type TableRouting,
} from './routing.js';
export { BUILTIN_DEFAULT_SOURCE } from './route.js';
export { LOOPBACK_NETWORKS } from './relayhosts.js';
