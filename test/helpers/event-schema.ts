/** Validates events against the published JSON Schema (the contract users rely on). */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const schema = JSON.parse(readFileSync(new URL('../../src/events/mail-event.v1.schema.json', import.meta.url), 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv);
const validate = ajv.compile(schema);

/** Returns null when valid, else a readable list of errors. */
export function mailEventErrors(event: unknown): string | null {
  if (validate(event)) return null;
  return ajv.errorsText(validate.errors, { separator: '\n' });
}
