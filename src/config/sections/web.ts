/** `web:` in mailwire.yml: the web viewer (web/) and its disposable addresses. */
import { z } from 'zod';

export const webSchema = z.object({}).strict().default({});
