/** The one module that imports js-yaml: parse a YAML document into plain data. */
import { load, dump } from 'js-yaml';

/** Parses YAML; a file with nothing but comments and blank lines is an empty document (null). */
export function parseYaml(text: string): unknown {
  // js-yaml 5 refuses an empty stream, but a config file with every key commented out is normal.
  if (text.split(/\r?\n/).every((line) => /^\s*(#.*)?$/.test(line))) return null;
  return load(text);
}

export function toYaml(value: unknown): string {
  return dump(value, { lineWidth: 120, noRefs: true });
}
