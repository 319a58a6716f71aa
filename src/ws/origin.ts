/** The Origin check of the feed's upgrade request lives in http/origin.ts (POST /submit uses it too). */
export { checkOrigin, normaliseOrigins, type OriginVerdict } from '../http/origin.js';
