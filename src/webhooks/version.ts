/** mailwire's version, for the User-Agent of webhook requests (one reader: src/util/version.ts). */
export { MAILWIRE_VERSION } from '../util/version.js';
