/** `http.auth:` in mailwire.yml: access control for the API, the feed and the viewer (src/auth/). */
import { z } from 'zod';

export const accessSchema = z.object({}).strict().default({});
