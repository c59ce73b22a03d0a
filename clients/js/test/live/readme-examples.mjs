// Extracts the README's examples (```js blocks whose first line is
// `// example: NAME.mjs`), writes each unchanged to test/live/.run/NAME.mjs
// (inside the package, so `import ... from "switchboard-client"` resolves to
// this package's dist/), and runs it with node. Each must exit 0 and print
// "example ok". Run by tests/e2e/test_js_sdk.py with SB_URL, SB_TOKEN, SB_PEER,
// SB_PEER_TOKEN set.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = fileURLToPath(new URL("../..", import.meta.url));
const readme = readFileSync(join(pkg, "README.md"), "utf8");
const blocks = [...readme.matchAll(/```js\n(\/\/ example: ([\w-]+\.mjs)\n[\s\S]*?)```/g)];
if (blocks.length === 0) {
  console.error("no `// example: NAME.mjs` block in README.md");
  process.exit(1);
}
const dir = join(pkg, "test/live/.run");
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
let failed = 0;
for (const [, code, name] of blocks) {
  const file = join(dir, name);
  writeFileSync(file, code);
  const r = spawnSync(process.execPath, [file], { encoding: "utf8", timeout: 60000, env: process.env });
  const out = (r.stdout ?? "") + (r.stderr ?? "");
  if (r.status === 0 && /example ok/.test(r.stdout)) {
    console.log(`ran example ${name}`);
  } else {
    failed++;
    console.log(`FAILED example ${name} (exit ${r.status}${r.signal ? ", " + r.signal : ""}):\n${out}`);
  }
}
process.exit(failed ? 1 : 0);
