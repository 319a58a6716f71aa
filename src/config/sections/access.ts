/** `http.auth:` in mailwire.yml: access control for the API, the feed and the viewer (src/auth/). */
import { z } from 'zod';

const accessObject = z
  .object({
    // auto: on when http.host is not a loopback address (a server others can reach never
    // serves mail to anyone who asks), off on loopback. true / false force it.
    enabled: z.union([z.literal('auto'), z.boolean()]).default('auto'),
    // Bearer tokens (Authorization: Bearer ...). 24 characters of a random token are well
    // beyond guessing over HTTP; a short one is refused rather than trusted. 100 tokens is
    // far more than a deployment has clients, and each costs a comparison per request.
    tokens: z
      .array(z.string().min(24, 'a token must be at least 24 characters (generate one: openssl rand -base64 32)').max(512).regex(/^[\x21-\x7e]+$/, 'a token is printable ASCII without spaces'))
      .max(100)
      .default([]),
    // The realm the browser shows in its login dialog. A quote or control character would
    // break out of the WWW-Authenticate header.
    realm: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[\x20-\x7e]+$/, 'printable ASCII only')
      .refine((r) => !/["\\]/.test(r), 'no quotes or backslashes')
      .default('mailwire'),
  })
  .strict();

export type AccessConfig = z.infer<typeof accessObject>;

// zod 4: .default({}) would not apply the inner defaults.
export const accessSchema = accessObject.default(accessObject.parse({}));
