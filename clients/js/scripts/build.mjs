// Build: tsc type-checks and writes dist/*.js + dist/*.d.ts (the modules, for
// tests and typings); esbuild writes the minified ESM bundle dist/switchboard.js.
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
rmSync(join(root, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json")], {
  stdio: "inherit",
});
await esbuild.build({
  entryPoints: [join(root, "src/index.ts")],
  outfile: join(root, "dist/switchboard.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
});
