/** `web:` in mailwire.yml: the web viewer (web/) and its disposable addresses. */
import { z } from 'zod';

/** A DNS domain: labels of letters, digits and hyphens, at most 253 characters, no trailing dot. */
const domain = z
  .string()
  .max(253)
  .regex(/^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$/, 'a domain name such as inbox.example.org');

const webSectionSchema = z
  .object({
    // The domain of the viewer's "new address" button (a random local part @ this domain).
    // null: smtp.hostname, or mailwire.test when that is unset too. On loopback every
    // recipient is accepted; on any other listener the domain must be in config/domains.
    disposable_domain: domain.nullable().default(null),
    // How often a viewer that cannot open the WebSocket feed (a proxy in the way) polls the
    // list instead. Every open tab costs one list query per interval: 500 ms is the floor so a
    // handful of tabs cannot keep SQLite busy; 60 s is the ceiling a user still calls "live".
    poll_interval_ms: z.number().int().min(500).max(60_000).default(3000),
  })
  .strict();

export const webSchema = webSectionSchema.default(webSectionSchema.parse({}));

export type WebConfig = z.infer<typeof webSectionSchema>;
