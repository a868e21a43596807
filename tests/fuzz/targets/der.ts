import {
  childrenOf,
  type DerNode,
  integerBytes,
  isConstructed,
  parseDer,
  readBigInt,
  readBitString,
  readBoolean,
  readOid,
  readSmallInt,
  readString,
  readTime,
  Tag,
} from "../../../lib/asn1/der.ts";
import { type FuzzTarget, refusalOnly } from "../harness.ts";

/**
 * The DER reader: one TLV, every constructed node walked, every primitive read with the
 * readers its universal tag calls for (and the integer readers on everything).
 */
export const der: FuzzTarget = {
  description: "the DER reader: parseDer, then every reader on every node",
  sync: true,
  maxLength: 64 * 1024,
  check(data) {
    let root: DerNode;
    try {
      root = parseDer(data, "fuzz");
    } catch (err) {
      return refusalOnly(err);
    }
    walk(root, 0, { reads: 0 });
  },
};

/**
 * Primitives read with every reader per input. Past it the walk only checks structure: each
 * refused read throws an Error (a stack trace each), which the parsers never do more than once
 * per input, so thousands of them would time the harness, not the reader.
 */
const MAX_READS = 256;

function attempt(read: () => unknown): void {
  try {
    read();
  } catch (err) {
    refusalOnly(err);
  }
}

function walk(node: DerNode, depth: number, budget: { reads: number }): void {
  if (isConstructed(node)) {
    if (depth > 64) return;
    let children: DerNode[] = [];
    try {
      children = childrenOf(node, "fuzz");
    } catch (err) {
      return refusalOnly(err);
    }
    for (const child of children) walk(child, depth + 1, budget);
    return;
  }
  if (budget.reads++ >= MAX_READS) return;
  attempt(() => integerBytes(node));
  attempt(() => readSmallInt(node));
  switch (node.tag) {
    case Tag.INTEGER:
    case Tag.ENUMERATED:
      attempt(() => readBigInt(node, "INTEGER", 257));
      break;
    case Tag.OID:
      attempt(() => readOid(node));
      break;
    case Tag.BOOLEAN:
      attempt(() => readBoolean(node));
      break;
    case Tag.BIT_STRING:
      attempt(() => readBitString(node));
      break;
    case Tag.UTC_TIME:
    case Tag.GENERALIZED_TIME:
      attempt(() => readTime(node));
      attempt(() => readTime(node, "Time", true));
      break;
    default:
      attempt(() => readString(node));
  }
}
