/** `webhooks:` in mailwire.yml. Owned by the webhooks module (src/webhooks/). */
import { z } from 'zod';

export const webhooksSchema = z.array(z.object({ url: z.string() }).strict()).default([]);
