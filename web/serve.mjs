// A static server for the demo page: web/ at the root, a bundle folder at /bundle/.
// Usage: node web/serve.mjs --bundle DIR [--port 8080] [--host 127.0.0.1]
// Also imported by the browser test (serve()). No dependencies beyond Node itself.
// A file with a precompressed `NAME.gz` beside it (web-build.sh writes one for the wasm) is sent
// gzip-encoded to browsers that accept it: what a visitor downloads.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.safetensors': 'application/octet-stream',
};

// Resolves a URL path under `base`, refusing anything that escapes it.
function under(base, rel) {
  const p = path.resolve(base, '.' + path.posix.normalize('/' + rel));
  return p === base || p.startsWith(base + path.sep) ? p : null;
}

export function serve({ root = here, bundle, port = 8080, host = '127.0.0.1', quiet = false } = {}) {
  const rootDir = path.resolve(root);
  const bundleDir = bundle ? path.resolve(bundle) : null;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let rel = decodeURIComponent(url.pathname);
    let file;
    if (rel.startsWith('/bundle/')) {
      file = bundleDir ? under(bundleDir, rel.slice('/bundle/'.length)) : null;
    } else {
      if (rel.endsWith('/')) rel += 'index.html';
      file = under(rootDir, rel);
    }
    fs.stat(file ?? '', (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end(`not found: ${url.pathname}\n`);
        if (!quiet) console.log(`404 ${url.pathname}`);
        return;
      }
      const headers = {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      };
      let body = file;
      let size = st.size;
      const gz = file + '.gz';
      if (/\bgzip\b/.test(req.headers['accept-encoding'] ?? '') && fs.existsSync(gz)) {
        const gst = fs.statSync(gz);
        if (gst.mtimeMs >= st.mtimeMs) {
          body = gz;
          size = gst.size;
          headers['content-encoding'] = 'gzip';
          headers['vary'] = 'accept-encoding';
        }
      }
      headers['content-length'] = size;
      res.writeHead(200, headers);
      fs.createReadStream(body).pipe(res);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: p } = server.address();
      resolve({ server, url: `http://${host}:${p}/` });
    });
  });
}

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const bundle = arg('--bundle', null);
  if (!bundle || !fs.existsSync(path.join(bundle, 'config.json'))) {
    console.error(`serve: --bundle must name a folder written by \`condenser export --web\` ` +
      `(got ${bundle ?? 'nothing'})`);
    process.exit(2);
  }
  if (!fs.existsSync(path.join(here, 'pkg', 'condenser_web.js'))) {
    console.error('serve: web/pkg is missing: run scripts/web-build.sh first');
    process.exit(2);
  }
  const { url } = await serve({
    bundle,
    port: Number(arg('--port', 8080)),
    host: arg('--host', '127.0.0.1'),
  });
  console.log(`Condenser demo: open ${url} (bundle ${path.resolve(bundle)}); Ctrl-C stops`);
}
