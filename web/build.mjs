// Builds the chat page into dist/ (or the directory given as the first argument):
// code generated from proto/chat/v1 by protoc-gen-es (buf generate), then src/app.js and its
// imports bundled by esbuild into one file. Deterministic: the same sources give the same bytes,
// so a test can rebuild and compare with the committed dist/.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "dist"));

rmSync(join(here, "gen"), { recursive: true, force: true });
execFileSync(
  join(here, "node_modules/.bin/buf"),
  ["generate", "../proto", "--template", "buf.gen.yaml", "--path", "../proto/chat/v1"],
  { cwd: here, stdio: "inherit" },
);

mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(here, "src/app.js")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
for (const file of ["index.html", "app.css"]) {
  copyFileSync(join(here, "src", file), join(out, file));
}
