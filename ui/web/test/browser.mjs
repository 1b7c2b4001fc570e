// Shared by the browser test and benchmark: Debian's chromium through
// playwright-core, headless, with a fresh profile.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// extraArgs: more chromium flags (the benchmark unlocks the frame rate).
export async function launch(viewport, extraArgs = []) {
  const profile = mkdtempSync(join(tmpdir(), 'loupe-chromium-'));
  // A persistent context is how playwright takes --user-data-dir.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', ...extraArgs],
  });
  return {
    newPage: () => context.newPage(),
    async close() { await context.close(); rmSync(profile, { recursive: true, force: true }); },
  };
}

export function fail(msg) {
  console.log(JSON.stringify({ ok: false, error: msg }));
  process.exit(1);
}
