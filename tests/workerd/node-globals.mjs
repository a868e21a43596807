// Finds references to Node-only globals in a minified bundle. esbuild renames every local
// binding when minifying, so an identifier still spelled `process` or `Buffer` in the output
// is a free reference to the global: code that would throw a ReferenceError on a runtime
// without Node compatibility (a plain Worker, a browser).
import ts from "typescript";

export const NODE_GLOBALS = ["process", "Buffer", "global", "__dirname", "__filename", "setImmediate"];

/**
 * Returns `{ name, guarded, snippet }` for each free reference to a Node global in `code`
 * (minified JavaScript). `guarded` is true for `typeof X` probes, which are harmless.
 */
export function nodeGlobalReferences(code, names = NODE_GLOBALS) {
  const wanted = new Set(names);
  const source = ts.createSourceFile("bundle.js", code, ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
  const found = [];
  const isNameOnly = (node) => {
    const parent = node.parent;
    if (!parent) return false;
    if (ts.isPropertyAccessExpression(parent) && parent.name === node) return true;
    if (
      (ts.isPropertyAssignment(parent) || ts.isMethodDeclaration(parent) ||
        ts.isPropertyDeclaration(parent) ||
        ts.isGetAccessorDeclaration(parent) || ts.isSetAccessorDeclaration(parent) ||
        ts.isPropertySignature(parent)) && parent.name === node
    ) return true;
    if (ts.isImportSpecifier(parent) || ts.isExportSpecifier(parent)) return true;
    if (ts.isLabeledStatement(parent) || ts.isBreakOrContinueStatement(parent)) return true;
    return false;
  };
  const visit = (node, parent) => {
    node.parent ??= parent;
    if (ts.isIdentifier(node) && wanted.has(node.text) && !isNameOnly(node)) {
      const start = node.getStart(source);
      found.push({
        name: node.text,
        guarded: ts.isTypeOfExpression(node.parent),
        snippet: code.slice(Math.max(0, start - 60), start + 60),
      });
    }
    ts.forEachChild(node, (child) => visit(child, node));
  };
  visit(source, undefined);
  return found;
}

/** Lines of the given source files that mention a Node global by name, to say where a hit came from. */
export function sourceHints(files, readText, names = NODE_GLOBALS) {
  const pattern = new RegExp(`\\b(${names.join("|")})\\b`);
  const hints = [];
  for (const file of files) {
    const lines = readText(file).split("\n");
    lines.forEach((line, i) => {
      if (pattern.test(line) && !/^\s*(\/\/|\*|\/\*)/.test(line)) {
        hints.push(`${file}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  return hints;
}
