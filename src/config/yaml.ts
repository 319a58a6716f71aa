/** The one module that imports js-yaml: parse a YAML document into plain data. */
import { load, dump } from 'js-yaml';

export function parseYaml(text: string): unknown {
  // JSON_SCHEMA-like core behaviour: no custom tags, no functions, no merge surprises.
  return load(text);
}

export function toYaml(value: unknown): string {
  return dump(value, { lineWidth: 120, noRefs: true });
}
