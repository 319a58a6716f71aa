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

/**
 * Parses YAML from the network (a /submit body in Haineko's YAML flow style). Aliases are
 * refused: `*ref` re-uses a node, so a few hundred bytes of nested aliases expand into an
 * exponentially large value (the "billion laughs"), which costs nothing to send and everything
 * to walk. Anchors alone are harmless. Nesting is capped far below js-yaml's 100: a request is
 * a flat object with a few lists. Throws on anything it refuses or cannot parse.
 */
export function parseUntrustedYaml(text: string): unknown {
  return load(text, { maxAliases: 0, maxDepth: 10 });
}
