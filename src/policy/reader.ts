// Typed reads over the YAML syntax tree. Reading nodes rather than plain JS values keeps every
// value's position, so each error points at the line and column a person has to fix.
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import type { PolicyError } from './errors.ts';

/** Returned by a read that failed; the error is already recorded, the caller keeps its fallback. */
export const BAD: unique symbol = Symbol('bad');
export type Bad = typeof BAD;

/** Collects errors for one file; every read reports here and carries on, so one run finds them all. */
export class Reader {
  readonly errors: PolicyError[] = [];
  readonly file: string;
  readonly #lines: LineCounter;
  readonly #doc: Document;

  constructor(file: string, lines: LineCounter, doc: Document) {
    this.file = file;
    this.#lines = lines;
    this.#doc = doc;
  }

  report(offset: number, field: string, reason: string): Bad {
    const { line, col } = this.#lines.linePos(offset);
    this.errors.push({ file: this.file, line, col, field, reason });
    return BAD;
  }

  lineOf(offset: number): number {
    return this.#lines.linePos(offset).line;
  }

  /** Aliases stand for the node they name; its position is where the anchor was written. */
  resolve(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.#doc) : node;
  }

  root(): Field {
    const contents = this.#doc.contents;
    return new Field(this, '', this.resolve(contents), (contents as Node | null)?.range?.[0] ?? 0);
  }
}

/** One value in the document: its node (null when absent or empty), dotted path and position. */
export class Field {
  readonly reader: Reader;
  readonly path: string;
  readonly node: unknown;
  readonly offset: number;

  constructor(reader: Reader, path: string, node: unknown, offset: number) {
    this.reader = reader;
    this.path = path;
    this.node = node;
    this.offset = offset;
  }

  fail(reason: string): Bad {
    return this.reader.report(this.offset, this.path, reason);
  }

  /** The plain scalar value, or undefined for a map or a list. */
  scalar(): unknown {
    return isScalar(this.node) ? this.node.value : undefined;
  }

  /** Absent value or `key:` with nothing after it. */
  isEmpty(): boolean {
    return this.node === null || this.node === undefined || (isScalar(this.node) && this.node.value === null);
  }

  isOff(): boolean {
    return this.scalar() === 'off';
  }

  /** How the value reads in a message: `got ...`. */
  got(): string {
    if (isMap(this.node)) return 'got a map';
    if (isSeq(this.node)) return 'got a list';
    const v = this.scalar();
    if (v === null || v === undefined) return 'got an empty value';
    if (typeof v === 'string') return `got ${JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)}`;
    return `got ${String(v)}`;
  }

  int(min: number, max: number): number | Bad {
    const v = this.scalar();
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    const want = `an integer from ${min} to ${max}`;
    if (v === 'off') return this.fail(`cannot be off; must be ${want}`);
    return this.fail(`must be ${want}, ${this.got()}`);
  }

  /** An integer or the word `off`, which reads as undefined: the protection is disabled. */
  intOrOff(min: number, max: number): number | undefined | Bad {
    const v = this.scalar();
    if (v === 'off') return undefined;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    return this.fail(`must be an integer from ${min} to ${max} or off, ${this.got()}`);
  }

  number(min: number, max: number): number | Bad {
    const v = this.scalar();
    if (typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max) return v;
    return this.fail(`must be a number from ${min} to ${max}, ${this.got()}`);
  }

  bool(): boolean | Bad {
    const v = this.scalar();
    if (typeof v === 'boolean') return v;
    return this.fail(`must be true or false, ${this.got()}`);
  }

  string(): string | Bad {
    const v = this.scalar();
    if (typeof v === 'string' && v !== '') return v;
    return this.fail(`must be a non-empty string, ${this.got()}`);
  }

  oneOf<T extends string>(values: readonly T[]): T | Bad {
    const v = this.scalar();
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
    const hint = typeof v === 'string' ? didYouMean(v, values) : '';
    return this.fail(`must be one of ${values.join(', ')}, ${this.got()}${hint}`);
  }

  /** A map entry by key without checking the map: for pointing at a field already read. */
  lookup(key: string): Field | undefined {
    if (!isMap(this.node)) return undefined;
    const pair = this.node.items.find((p) => isScalar(p.key) && p.key.value === key);
    return pair ? this.child(`${this.path}.${key}`, pair.value, this.offset) : undefined;
  }

  /** Items of a list, each with its own path `field[i]`. */
  list(): Field[] | Bad {
    if (!isSeq(this.node)) return this.fail(`must be a list, ${this.got()}`);
    return this.node.items.map((item, i) => this.child(`${this.path}[${i}]`, item, this.offset));
  }

  /**
   * A map whose keys must all be in `known`; unknown keys are reported where they are written.
   * An empty value (`retry:`) reads as an empty map: the section keeps all its defaults.
   */
  map(known: readonly string[]): MapView | Bad {
    if (this.isEmpty()) return new MapView(this, new Map());
    if (this.isOff()) return this.fail('cannot be off; must be a map');
    const entries = this.#entries('field names', (name, path, keyOffset) => {
      if (known.includes(name)) return true;
      const hint = didYouMean(name, known);
      this.reader.report(keyOffset, path, `unknown field${hint || `; known fields are ${known.join(', ')}`}`);
      return false;
    });
    return entries === BAD ? BAD : new MapView(this, entries);
  }

  /** A map whose keys are data, not field names (labels): every entry, each a field of its own. */
  entries(): ReadonlyMap<string, Field> | Bad {
    if (this.isEmpty()) return new Map();
    return this.#entries('strings', () => true);
  }

  /** The map's entries with string keys that `keep` accepts; other keys are reported. */
  #entries(keysMustBe: string, keep: (name: string, path: string, keyOffset: number) => boolean): Map<string, Field> | Bad {
    if (!isMap(this.node)) return this.fail(`must be a map, ${this.got()}`);
    const entries = new Map<string, Field>();
    for (const pair of this.node.items) {
      const key = this.reader.resolve(pair.key);
      const keyOffset = (key as Node | null)?.range?.[0] ?? this.offset;
      const name = isScalar(key) ? key.value : undefined;
      if (typeof name !== 'string') {
        this.reader.report(keyOffset, this.path, `map keys must be ${keysMustBe}, got ${String(name)}`);
        continue;
      }
      const path = this.path ? `${this.path}.${name}` : name;
      if (keep(name, path, keyOffset)) entries.set(name, this.child(path, pair.value, keyOffset));
    }
    return entries;
  }

  child(path: string, raw: unknown, fallbackOffset: number): Field {
    const node = this.reader.resolve(raw);
    // An empty value has a zero-width range where the value would be; that is the spot to point at.
    return new Field(this.reader, path, node, (node as Node | null)?.range?.[0] ?? fallbackOffset);
  }
}

export class MapView {
  readonly field: Field;
  readonly #entries: ReadonlyMap<string, Field>;

  constructor(field: Field, entries: ReadonlyMap<string, Field>) {
    this.field = field;
    this.#entries = entries;
  }

  get(key: string): Field | undefined {
    return this.#entries.get(key);
  }

  /** A required field; its absence is reported at the map that should hold it. */
  require(key: string): Field | Bad {
    const f = this.#entries.get(key);
    if (f) return f;
    const path = this.field.path ? `${this.field.path}.${key}` : key;
    return this.field.reader.report(this.field.offset, path, 'is required');
  }
}

/** `; did you mean X?` when a known name is within edit distance 2, else ''. */
export function didYouMean(input: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = levenshtein(input.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best === undefined ? '' : `; did you mean ${best}?`;
}

export function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
    }
    prev = row;
  }
  return prev[b.length]!;
}
