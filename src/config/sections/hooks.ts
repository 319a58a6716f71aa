/** `hooks:` in mailwire.yml: hook scripts per SMTP phase (src/hooks/). */
import { z } from 'zod';

export const hooksSchema = z.object({}).strict().default({});
