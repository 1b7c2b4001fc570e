// Builds the UI into ../dist: app.js, connect.js, layout-worker.js, app.css
// and index.html. The output depends only on the sources and the exact
// versions in package-lock.json (no timestamps, no source maps with
// absolute paths), so CI can rebuild and compare.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'dist');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const common = { bundle: true, minify: true, legalComments: 'none', logLevel: 'warning', charset: 'utf8', absWorkingDir: here };
await build({ ...common, entryPoints: ['src/main.js'], outfile: join(out, 'app.js'), format: 'iife', target: ['chrome100', 'firefox100', 'safari15'] });
await build({ ...common, entryPoints: ['src/layout-worker.js'], outfile: join(out, 'layout-worker.js'), format: 'iife', target: ['chrome100', 'firefox100', 'safari15'] });
await build({ ...common, entryPoints: ['src/connect.js'], outfile: join(out, 'connect.js'), format: 'iife', target: ['chrome100', 'firefox100', 'safari15'] });
await build({ ...common, entryPoints: ['src/style.css'], outfile: join(out, 'app.css') });
copyFileSync(join(here, 'index.html'), join(out, 'index.html'));
