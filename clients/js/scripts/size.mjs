// Prints the size of the bundle, minified and minified+gzipped (target: <= 15 KiB gzipped).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const file = join(dirname(fileURLToPath(import.meta.url)), "../dist/switchboard.js");
let data;
try {
  data = readFileSync(file);
} catch {
  console.error("dist/switchboard.js is missing: run `npm run build` first");
  process.exit(1);
}
const gz = gzipSync(data, { level: 9 }).length;
const limit = 15 * 1024;
console.log(`dist/switchboard.js: ${data.length} bytes minified, ${gz} bytes minified+gzipped (limit ${limit})`);
if (gz > limit) {
  console.error("over the 15 KiB budget");
  process.exit(1);
}
