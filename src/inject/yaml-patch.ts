// Applies a JSON Patch to a parsed YAML document in place, node by node, so everything the patch
// does not touch keeps its comments, quoting and flow style. Gives up (false) on what it cannot
// follow faithfully, an alias on the way: the caller then writes the document afresh.
import { isAlias, isMap, isSeq, type Document, type Node } from 'yaml';
import { unescapePointer, type PatchOp } from './json-patch.ts';

function segments(path: string): string[] {
  return path === '' ? [] : path.slice(1).split('/').map(unescapePointer);
}

function child(node: unknown, key: string): unknown {
  if (isMap(node)) return node.get(key, true);
  if (isSeq(node)) return node.items[Number(key)];
  return undefined;
}

function applyOne(doc: Document, op: PatchOp): boolean {
  const path = segments(op.path);
  const value = op.op === 'remove' ? undefined : (doc.createNode(op.value) as Node);
  if (path.length === 0) {
    if (op.op === 'remove') return false;
    doc.contents = value as Document['contents'];
    return true;
  }
  let parent: unknown = doc.contents;
  for (const key of path.slice(0, -1)) {
    if (isAlias(parent)) return false;
    parent = child(parent, key);
  }
  const last = path[path.length - 1] as string;
  if (isMap(parent)) {
    if (isAlias(parent.get(last, true))) return false;
    if (op.op === 'remove') return parent.delete(last);
    parent.set(last, value);
    return true;
  }
  if (isSeq(parent)) {
    const index = last === '-' ? parent.items.length : Number(last);
    if (!Number.isInteger(index) || index < 0 || index > parent.items.length) return false;
    if (op.op === 'add') parent.items.splice(index, 0, value);
    else if (index === parent.items.length || isAlias(parent.items[index])) return false;
    else if (op.op === 'replace') parent.items[index] = value;
    else parent.items.splice(index, 1);
    return true;
  }
  return false;
}

/** True when every op applied; on false, doc is partly patched and should be discarded. */
export function applyToDocument(doc: Document, ops: readonly PatchOp[]): boolean {
  return ops.every((op) => applyOne(doc, op));
}
