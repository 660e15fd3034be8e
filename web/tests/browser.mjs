// Drives the demo page in Debian's headless Chromium with playwright-core: loads a bundle,
// uploads an image, asks a question, and reports per backend what it answered and measured.
//
//   node web/tests/browser.mjs --bundle DIR --image FILE --question "..." \
//        [--expect "answer"] [--require cpu] [--try webgpu] [--json out.json]
//        [--screenshot page.png]
//
// Backends in --require must load and (with --expect) answer exactly the expected text, else
// the exit status is 1; backends in --try are attempted and reported either way.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../serve.mjs';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function arg(name, fallback = null) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const list = (s) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : []);

const bundle = arg('--bundle');
const image = arg('--image');
const question = arg('--question');
const expect = arg('--expect');
const required = list(arg('--require', 'cpu'));
const tried = list(arg('--try', ''));
const jsonOut = arg('--json');
const screenshot = arg('--screenshot');
const chromiumPath = arg('--chromium', process.env.CHROMIUM ?? '/usr/bin/chromium');
const timeoutMs = Number(arg('--timeout-ms', 120000));

function fail(msg) {
  console.error(`browser test: ${msg}`);
  process.exit(2);
}
if (!bundle || !image || !question) fail('--bundle, --image and --question are required');
if (!fs.existsSync(path.join(web, 'pkg', 'condenser_web_bg.wasm'))) {
  fail('web/pkg/condenser_web_bg.wasm is missing: run scripts/web-build.sh');
}
if (!fs.existsSync(chromiumPath)) fail(`${chromiumPath} not found: run scripts/setup.sh`);

// a hung browser must not hang the test suite: give up on the whole run after a bound
const watchdog = setTimeout(() => {
  console.error(`browser test: no result after ${4 * timeoutMs} ms, giving up`);
  process.exit(3);
}, 4 * timeoutMs);
watchdog.unref();

const { server, url } = await serve({ bundle, port: 0, quiet: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'condenser-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: chromiumPath,
  headless: true,
  args: [
    '--no-sandbox',
    '--enable-unsafe-webgpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});

async function runBackend(backend) {
  const page = await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  const result = { backend, loaded: false, answered: false };
  try {
    await page.goto(`${url}?backend=${backend}`);
    // resolves when the model is built, rejects with the page's own error message, or gives up
    await page.evaluate(
      (ms) => Promise.race([
        window.condenser.ready,
        new Promise((_, reject) => setTimeout(() => reject(new Error(`model not ready after ${ms} ms`)), ms)),
      ]),
      timeoutMs,
    );
    Object.assign(result, await page.evaluate(() => ({
      loaded: true,
      ran: window.condenser.backend,
      loadMs: window.condenser.loadMs,
      timings: window.condenser.timings,
      backendText: document.getElementById('backend').textContent,
      // what crossed the wire for the wasm (gzip-encoded when the server has a .gz copy)
      wasmEncodedBytes: performance.getEntriesByType('resource')
        .filter((e) => e.name.endsWith('.wasm'))
        .map((e) => e.encodedBodySize)[0] ?? null,
    })));
    await page.setInputFiles('#upload', image);
    await page.waitForFunction(() => document.getElementById('caption').textContent.startsWith('Uploaded'));
    await page.fill('#question', question);
    await page.click('#ask');
    await page.waitForSelector('#answer[data-state="done"], #answer[data-state="error"]', { timeout: timeoutMs });
    const state = await page.getAttribute('#answer', 'data-state');
    const text = await page.textContent('#answer');
    if (state !== 'done') throw new Error(`the page answered with an error: ${text}`);
    const last = await page.evaluate(() => window.condenser.last);
    Object.assign(result, { answered: true, answer: text, ...last });
    if (screenshot && backend === required[0]) {
      await page.setViewportSize({ width: 820, height: 900 });
      await page.screenshot({ path: screenshot, fullPage: true });
    }
  } catch (e) {
    result.error = String(e.message ?? e).split('\n')[0];
  }
  // the first messages name the root cause, the last ones what it led to
  result.console = log.length > 10 ? [...log.slice(0, 4), `... ${log.length - 10} more`, ...log.slice(-6)] : log;
  await page.close();
  return result;
}

const results = [];
for (const b of [...required, ...tried]) results.push(await runBackend(b));
await context.close();
server.close();
fs.rmSync(profile, { recursive: true, force: true });

const wasm = fs.statSync(path.join(web, 'pkg', 'condenser_web_bg.wasm')).size;
const weights = fs.statSync(path.join(bundle, 'weights.safetensors')).size;
const report = { question, expect, wasmBytes: wasm, weightsBytes: weights, results };
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(report, null, 2));
console.log(JSON.stringify(report, null, 2));

let ok = true;
for (const r of results) {
  const must = required.includes(r.backend);
  const matches = expect === null || r.answer === expect;
  const verdict = !r.answered ? `did not answer (${r.error})` : matches ? 'answer matches' : `answer ${JSON.stringify(r.answer)} differs from ${JSON.stringify(expect)}`;
  console.error(`${must ? 'required' : 'tried'} ${r.backend}: ran on ${r.ran ?? '-'}; ${verdict}`);
  if (must && (!r.answered || !matches || r.ran !== (r.backend === 'auto' ? r.ran : r.backend))) ok = false;
}
process.exit(ok ? 0 : 1);
