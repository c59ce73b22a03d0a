// Builds the web app into ../../edge/web/ (index.html, app.js, app.css, sw.js),
// which the edge serves at /. The SDK is bundled from ../js/src. The output is
// reproducible: the same sources and esbuild version give byte-identical
// files (a test compares the committed files with a fresh build).
//   node build.mjs            write edge/web/
//   node build.mjs --verify   exit 1 if edge/web/ differs from a fresh build
//   node build.mjs --size     also print the sizes (app.js minified and gzipped)
import { build, transform } from "esbuild";
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "edge", "web");
const verify = process.argv.includes("--verify");
const size = process.argv.includes("--size");

const app = await build({
  absWorkingDir: here,
  entryPoints: ["src/main.ts"],
  // No tsconfig.json is read (neither ours nor the SDK's): the output must not
  // depend on files outside the sources. These are the SDK's own settings
  // (ES2020: class fields are assigned in the constructor, as tsc emits them).
  tsconfigRaw: { compilerOptions: { useDefineForClassFields: false, verbatimModuleSyntax: false } },
  // Nor the SDK's package.json "sideEffects" (tree shaking would differ with it).
  ignoreAnnotations: true,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  write: false,
  outfile: "app.js",
  logLevel: "warning",
});
const css = await transform(await readFile(join(here, "src", "app.css"), "utf8"), {
  loader: "css", minify: true, charset: "utf8", target: ["chrome100", "firefox100", "safari15"],
});
// The stylesheet is inlined into index.html: the first paint then waits for
// no second request (measured on loopback: median first-contentful-paint
// ~125 ms inlined vs ~245 ms linked). app.css is still written, for a host
// page that embeds the app's markup.
const LINK = '<link rel="stylesheet" href="/app.css">';
const html = await readFile(join(here, "src", "index.html"), "utf8");
if (!html.includes(LINK)) throw new Error(`src/index.html must link the stylesheet as ${LINK}`);
const files = {
  "index.html": Buffer.from(html.replace(LINK, () => `<style>${css.code.trim()}</style>`)),
  "app.js": Buffer.from(app.outputFiles[0].contents),
  "app.css": Buffer.from(css.code),
  "sw.js": await readFile(join(here, "src", "sw.js")),
};

if (verify) {
  const stale = [];
  for (const [name, data] of Object.entries(files)) {
    const have = await readFile(join(out, name)).catch(() => null);
    if (!have || !have.equals(data)) stale.push(name);
  }
  if (stale.length) {
    console.error(`edge/web is stale (${stale.join(", ")}): run npm run build in clients/web and commit edge/web/`);
    process.exit(1);
  }
  console.log("edge/web matches a fresh build");
} else {
  await mkdir(out, { recursive: true });
  for (const [name, data] of Object.entries(files)) await writeFile(join(out, name), data);
}
if (size) {
  for (const [name, data] of Object.entries(files)) {
    console.log(`${name.padEnd(10)} ${String(data.length).padStart(7)} B, gzipped ${String(gzipSync(data, { level: 9 }).length).padStart(6)} B`);
  }
}
