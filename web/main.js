// The page: fetches a bundle (written by `condenser export --web`), loads the wasm engine,
// picks a backend, and streams the student's answers. What it measured is kept on
// `window.condenser` (load time, backend, the last answer's tokens/s) for the browser test.
import init, { Student, shapesImage } from './pkg/condenser_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const bundleBase = new URL(params.get('bundle') ?? 'bundle/', location.href);
const backendWanted = params.get('backend') ?? 'auto';
const MAX_TOKENS = 48;

const page = {
  student: null,
  image: null, // the encoded image (PNG/JPEG bytes) the next question is about
  imageUrl: null,
  loadMs: null,
  timings: {},
  last: null,
  error: null,
};
window.condenser = page;

function setStatus(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
}

// GET with a progress callback (bytes so far, total or 0); `optional` files may be missing.
async function fetchBytes(name, { optional = false, onProgress = () => {} } = {}) {
  const url = new URL(name, bundleBase);
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`${url}: cannot fetch (${e.message})`);
  }
  if (!res.ok) {
    if (optional && res.status === 404) return null;
    throw new Error(`${url}: HTTP ${res.status} (is this a bundle written by condenser export --web?)`);
  }
  const total = Number(res.headers.get('content-length') ?? 0);
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const parts = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.length;
    onProgress(got, total);
  }
  const out = new Uint8Array(got);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function showImage(bytes, type, caption) {
  page.image = bytes;
  if (page.imageUrl) URL.revokeObjectURL(page.imageUrl);
  page.imageUrl = URL.createObjectURL(new Blob([bytes], { type }));
  $('picture').src = page.imageUrl;
  $('caption').textContent = caption;
}

function drawScene(seed) {
  const size = page.student ? page.student.imageSize : 36;
  const img = shapesImage(seed >>> 0, size);
  showImage(img.png, 'image/png', `Scene ${seed}: ${img.caption}`);
  img.free();
}

async function ask(question) {
  const answer = $('answer');
  const stats = $('stats');
  answer.dataset.state = 'running';
  answer.textContent = '';
  stats.textContent = '';
  $('ask').disabled = true;
  const t0 = performance.now();
  let tFirst = null;
  let tokens = 0;
  try {
    const text = await page.student.ask(page.image, question, MAX_TOKENS, (soFar, n) => {
      if (tFirst === null) tFirst = performance.now();
      tokens = n;
      answer.textContent = soFar;
    });
    const t1 = performance.now();
    answer.textContent = text;
    answer.dataset.state = 'done';
    // decode rate: tokens after the first over the time after the first (prefill excluded)
    const decodeS = tFirst === null ? 0 : (t1 - tFirst) / 1000;
    const perS = tokens > 1 && decodeS > 0 ? (tokens - 1) / decodeS : null;
    page.last = {
      question, answer: text, tokens, totalMs: t1 - t0,
      firstTokenMs: tFirst === null ? null : tFirst - t0, tokensPerS: perS,
      overallTokensPerS: tokens > 0 ? tokens / ((t1 - t0) / 1000) : null,
    };
    stats.textContent = `${tokens} token${tokens === 1 ? '' : 's'} in ${(t1 - t0).toFixed(0)} ms` +
      (tFirst === null ? '' : ` · first token after ${(tFirst - t0).toFixed(0)} ms`) +
      (perS === null ? '' : ` · ${perS.toFixed(1)} tokens/s after it`);
    return text;
  } catch (e) {
    answer.dataset.state = 'error';
    answer.textContent = String(e.message ?? e);
    page.error = answer.textContent;
    throw e;
  } finally {
    $('ask').disabled = false;
  }
}

async function main() {
  const t0 = performance.now();
  await init();
  const tWasm = performance.now();
  setStatus('loading', 'Fetching the bundle…');
  const progress = $('load-progress');
  const [manifest, config, weights, tokenizer] = await Promise.all([
    fetchBytes('bundle.json', { optional: true }),
    fetchBytes('config.json'),
    fetchBytes('weights.safetensors', {
      onProgress: (got, total) => { if (total) progress.value = got / total; },
    }),
    fetchBytes('tokenizer.json'),
  ]);
  progress.value = 1;
  const tFetch = performance.now();
  let backend = backendWanted;
  let why = '';
  if (backend === 'auto' && !navigator.gpu) {
    backend = 'cpu';
    why = 'navigator.gpu is missing: this browser offers no WebGPU';
  }
  setStatus('loading', `Building the model (${backend === 'cpu' ? 'CPU' : 'WebGPU'})…`);
  page.student = await Student.load(manifest, config, weights, tokenizer, backend);
  const tReady = performance.now();
  const s = page.student;
  const note = why || s.note;
  $('backend').dataset.backend = s.backend;
  $('backend').textContent = `${s.backend === 'webgpu' ? 'WebGPU' : 'CPU (burn flex in wasm)'} · ${note}`;
  $('model-info').textContent =
    `${(s.params / 1e6).toFixed(2)} M parameters · ${s.dtype} weights ` +
    `(${(weights.length / 1024).toFixed(0)} KiB) · ${s.imageSize}×${s.imageSize} px input`;
  // since navigation start: what a visitor waits before the first question can be asked
  page.loadMs = tReady;
  page.backend = s.backend;
  page.timings = { wasmMs: tWasm - t0, fetchMs: tFetch - tWasm, buildMs: tReady - tFetch };
  progress.hidden = true;
  setStatus('ready', `Ready in ${tReady.toFixed(0)} ms (wasm ${page.timings.wasmMs.toFixed(0)} ms, ` +
    `bundle ${page.timings.fetchMs.toFixed(0)} ms, model ${page.timings.buildMs.toFixed(0)} ms).`);
  drawScene(Number($('seed').value));
  $('ask').disabled = false;
}

$('new-scene').addEventListener('click', () => drawScene(Number($('seed').value)));
$('random-scene').addEventListener('click', () => {
  const seed = Math.floor(Math.random() * 1e6);
  $('seed').value = seed;
  drawScene(seed);
});
$('upload').addEventListener('change', async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  showImage(bytes, file.type || 'image/png', `Uploaded: ${file.name}`);
});
$('ask-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const q = $('question').value.trim();
  if (q && page.student && page.image) ask(q).catch(() => {});
});
for (const b of document.querySelectorAll('.suggest')) {
  b.addEventListener('click', () => { $('question').value = b.textContent; });
}

page.ready = main().catch((e) => {
  page.error = String(e.message ?? e);
  setStatus('error', page.error);
  throw e;
});
