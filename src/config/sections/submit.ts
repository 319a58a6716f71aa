/** `submit:` in mailwire.yml: limits of the Haineko-compatible POST /submit (src/submit/, src/relay/). */
import { z } from 'zod';

export const submitSchema = z.object({}).strict().default({});
