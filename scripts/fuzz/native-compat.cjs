// Loaded with `node --require` before Jazzer.js: makes its prebuilt libFuzzer addon load on
// an older glibc and libstdc++ than the ones it was linked against (Debian 12 has glibc 2.36
// and GCC 12's libstdc++; the prebuild asks for glibc 2.38 and GLIBCXX_3.4.32). Only three
// symbols come from those versions: the C23 strtol/strtoul entry points and libstdc++ 13's
// iostream init hook. A copy of the addon gets those version requirements renamed to versions
// the system has, and scripts/fuzz/compat-shim.c (preloaded) defines the three symbols.
// Nothing here is used outside fuzzing runs; the regression tests replay corpora without it.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const Module = require("node:module");

const RENAMES = { "GLIBC_2.38": "GLIBC_2.2.5", "GLIBCXX_3.4.32": "GLIBCXX_3.4" };

function elfHash(name) {
  let h = 0;
  for (const c of Buffer.from(name)) {
    h = ((h << 4) + c) >>> 0;
    const g = h & 0xf0000000;
    if (g) h ^= g >>> 24;
    h &= ~g >>> 0;
    h >>>= 0;
  }
  return h >>> 0;
}

/** Renames the version needs in RENAMES inside an ELF64 shared object; returns how many. */
function patchVersionNeeds(buf) {
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const section = (i) => {
    const o = shoff + i * shentsize;
    return {
      type: buf.readUInt32LE(o + 4),
      offset: Number(buf.readBigUInt64LE(o + 0x18)),
      link: buf.readUInt32LE(o + 0x28),
      info: buf.readUInt32LE(o + 0x2c),
    };
  };
  let patched = 0;
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== 0x6ffffffe) continue; // SHT_GNU_verneed
    const strtab = section(s.link).offset;
    const str = (off) => {
      let end = strtab + off;
      while (buf[end] !== 0) end++;
      return buf.toString("latin1", strtab + off, end);
    };
    let vn = s.offset;
    for (let n = 0; n < s.info; n++) {
      const count = buf.readUInt16LE(vn + 2);
      const auxes = [];
      let aux = vn + buf.readUInt32LE(vn + 8);
      for (let k = 0; k < count; k++) {
        auxes.push({ at: aux, name: str(buf.readUInt32LE(aux + 8)), nameOffset: buf.readUInt32LE(aux + 8) });
        aux += buf.readUInt32LE(aux + 12);
      }
      for (const a of auxes) {
        const target = RENAMES[a.name];
        if (!target) continue;
        const existing = auxes.find((b) => b.name === target);
        if (!existing) throw new Error(`no ${target} need to borrow the name of`);
        buf.writeUInt32LE(elfHash(target), a.at);
        buf.writeUInt32LE(existing.nameOffset, a.at + 8);
        patched++;
      }
      vn += buf.readUInt32LE(vn + 12);
    }
  }
  return patched;
}

const cacheDir = path.join(__dirname, "../../node_modules/.cache/meshauth-fuzz");
const original = Module._extensions[".node"];
Module._extensions[".node"] = function (module, filename) {
  if (/@jazzer\.js[\\/]fuzzer[\\/]prebuilds[\\/]fuzzer-linux-x64\.node$/.test(filename)) {
    fs.mkdirSync(cacheDir, { recursive: true });
    const copy = path.join(cacheDir, "fuzzer-linux-x64.node");
    if (!fs.existsSync(copy) || fs.statSync(copy).mtimeMs < fs.statSync(filename).mtimeMs) {
      const buf = fs.readFileSync(filename);
      patchVersionNeeds(buf);
      // A temporary name of this process's own: two fuzzers patching at once never rename
      // each other's half-written copy into place.
      const partial = `${copy}.${process.pid}.tmp`;
      fs.writeFileSync(partial, buf);
      fs.renameSync(partial, copy);
    }
    return original.call(this, module, copy);
  }
  return original.call(this, module, filename);
};
module.exports = { patchVersionNeeds, cacheDir };
