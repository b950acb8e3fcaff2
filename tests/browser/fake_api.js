/* fake_api.js: a small stand-in for the tdlab REST API, serving web/ plus deterministic
 * fixture data, so that the dashboard can be checked on shapes the real daemon may not
 * produce in a quick test: non-finite metric values ("NaN", "Infinity"), sharpness with a
 * 2/lr reference, spectral-density and eigenvalue artifacts, a 1e6-step run (downsampled
 * here as the server would), and a sweep with a power-law fit and its interval band.
 * Only Node's built-in modules. Usage: require('./fake_api.js').start(webDir, port) ->
 * Promise<server>; or `node fake_api.js WEB_DIR PORT` to browse it by hand. */
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');

const T0 = '2026-01-01T12:00:00Z';
const T1 = '2026-01-01T12:03:20Z';

/* deterministic pseudo-random numbers (LCG) so fixtures never change */
function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
}

const jobs = [
  { id: 1, kind: 'train', name: 'fmnist-mlp', status: 'succeeded', tags: ['demo'],
    params: { data: { name: 'fashion-mnist', n_train: 60000, n_test: 10000 }, model: { hidden: [256], activation: 'relu', init_scale: 1 },
      loss: 'cross_entropy', optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9, nesterov: false }, batch_size: 128, epochs: 2, eval_every: 100, seed: 0 },
    progress: { done: 938, total: 938 }, created_at: T0, started_at: T0, finished_at: T1, error: null,
    summary: { test_acc: 0.8512, test_loss: 0.4123, train_loss: 0.3511, n_params: 203530, steps_per_sec: 412.5 } },
  { id: 2, kind: 'eos', name: 'eos-gd-lr0.02', status: 'running', tags: ['eos', 'sweep:7'],
    params: { lr: 0.02, analyze_every: 10, data: { name: 'fashion-mnist', n_train: 1000 } },
    progress: { done: 600, total: 2000 }, created_at: T0, started_at: T0, finished_at: null, error: null, summary: {} },
  { id: 3, kind: 'train', name: 'too-big-lr', status: 'diverged', tags: [],
    params: { optimizer: { name: 'sgd', lr: 50 } }, progress: { done: 37, total: 500 },
    created_at: T0, started_at: T0, finished_at: T1, error: 'loss became non-finite at step 37', summary: { diverged_step: 37, train_loss: 'NaN' } },
  { id: 4, kind: 'nqm', name: 'million-steps', status: 'succeeded', tags: [],
    params: { dim: 1000, lr: 0.01, max_steps: 1000000 }, progress: { done: 1000000, total: 1000000 },
    created_at: T0, started_at: T0, finished_at: T1, error: null, summary: { steps_to_target: 812345, final_loss: 1.2e-4 } },
  { id: 5, kind: 'linreg', status: 'queued', tags: [], params: { lr: 0.1 }, progress: { done: 0, total: 300 },
    created_at: T0, started_at: null, finished_at: null, error: null, summary: null },
];

/* A fork pair, reachable by id but not in the jobs list (whose length other checks count):
 * job 7 wrote checkpoints at steps 200 and 400; job 8 was forked from it at step 400 with a
 * smaller lr. */
const FORK_PARAMS = { data: { name: 'fashion-mnist', n_train: 1000 }, model: { hidden: [32] },
  optimizer: { name: 'sgd', lr: 0.1 }, batch_size: 64, steps: 600, checkpoint_every: 200, seed: 0 };
const forkJobs = [
  { id: 7, kind: 'train', name: 'parent', status: 'succeeded', tags: [], params: FORK_PARAMS,
    progress: { done: 600, total: 600 }, created_at: T0, started_at: T0, finished_at: T1, error: null,
    summary: { train_loss: 0.3 }, parent: null, children: [8] },
  { id: 8, kind: 'train', name: 'parent fork@400', status: 'succeeded', tags: [],
    params: Object.assign({}, FORK_PARAMS, { optimizer: { name: 'sgd', lr: 0.01 }, fork: { job: 7, step: 400 } }),
    progress: { done: 600, total: 600 }, created_at: T0, started_at: T0, finished_at: T1, error: null,
    summary: { train_loss: 0.25 }, parent: { job: 7, step: 400 }, children: [] },
];
let lastPost = null;  /* the body of the last POST /api/v1/jobs (GET /api/v1/__last_post) */
function findJob(id) { return jobs.find((x) => x.id === id) || forkJobs.find((x) => x.id === id); }

/* metrics for each fixture job: {key: [[step, value], ...]} with raw JSON values */
function metricsFor(id) {
  const out = {};
  const r = rng(id);
  if (id === 1) {
    out.train_loss = []; out.grad_norm = []; out.param_norm = [];
    for (let s = 0; s <= 938; s++) {
      out.train_loss.push([s, 0.35 + 1.95 * Math.exp(-s / 60) + 0.08 * (r() - 0.5)]);
      out.grad_norm.push([s, 0.5 + 2 * Math.exp(-s / 100) + 0.2 * r()]);
      out.param_norm.push([s, 20 + 3 * (1 - Math.exp(-s / 300))]);
    }
    out.test_loss = []; out.test_acc = []; out.train_acc = [];
    for (let s = 0; s <= 938; s += 100) {
      out.test_loss.push([s, 0.41 + 1.9 * Math.exp(-s / 70)]);
      out.test_acc.push([s, 0.85 - 0.75 * Math.exp(-s / 60)]);
      out.train_acc.push([s, 0.87 - 0.77 * Math.exp(-s / 60)]);
    }
  } else if (id === 2) {
    out.train_loss = []; out.sharpness = []; out.two_over_lr = [];
    for (let s = 0; s <= 600; s++) {
      let v = 2.3 * Math.exp(-s / 200) + 0.05 * Math.sin(s / 5);
      if (s === 300) v = 'NaN';
      if (s === 450) v = 'Infinity';
      out.train_loss.push([s, v]);
      if (s % 10 === 0) {
        out.sharpness.push([s, Math.min(100, 10 + s / 4) + 3 * Math.sin(s / 17)]);
        out.two_over_lr.push([s, 100]);
      }
    }
    out['weight_norm/0'] = []; out['weight_norm/1'] = [];
    for (let s = 0; s <= 600; s += 10) { out['weight_norm/0'].push([s, 5 + s / 200]); out['weight_norm/1'].push([s, 3 + s / 300]); }
    out.hessian_trace = [[0, 120], [200, 300], [400, '-Infinity'], [600, 410]];
    out.hessian_trace_stderr = [[0, 8], [200, 9], [400, 9], [600, 10]];
    out.stability_threshold = out.two_over_lr.map((p) => [p[0], 100]);
    out.sharpness_resid = out.sharpness.map((p) => [p[0], 1e-10 * (1 + r())]);
    out.sharpness_ratio = out.sharpness.map((p) => [p[0], p[1] / 100]);
    out.lanczos_steps = out.sharpness.map((p) => [p[0], 20 + Math.floor(10 * r())]);
  } else if (id === 3) {
    out.train_loss = [];
    for (let s = 0; s <= 37; s++) out.train_loss.push([s, s < 36 ? 2.3 * Math.pow(1.6, s) : 'NaN']);
    out.grad_norm = [[0, 1], [10, 30], [20, 1e5], [30, 'Infinity'], [37, 'NaN']];
    out.sharpness = [[0, 'NaN'], [10, 'Infinity'], [20, 'NaN']];  // nothing finite at all
    out.lr = [[0, 50]];  // a single point
    out.param_norm = [[0, 1], [10, 1e10], [20, 1e29], [30, 1e150], [35, 1e250], [37, 'Infinity']];  // beyond what uPlot draws
  } else if (id === 7) {
    out.train_loss = [];
    for (let s = 0; s <= 600; s += 5) out.train_loss.push([s, 2.3 * Math.exp(-s / 150) + 0.2]);
  } else if (id === 8) {
    out.train_loss = [];
    for (let s = 400; s <= 600; s += 5) out.train_loss.push([s, 2.3 * Math.exp(-400 / 150) * Math.exp(-(s - 400) / 60) + 0.15]);
  } else if (id === 4) {
    // a million steps, downsampled by the caller's max_points (done in handler)
    out.loss = null;
  }
  return out;
}

/* downsampling as DESIGN.md says: first, last, and each bucket's min and max */
function downsample(n, maxPoints, f) {
  const steps = [], values = [];
  if (n <= maxPoints) { for (let i = 0; i < n; i++) { steps.push(i); values.push(f(i)); } return { step: steps, value: values }; }
  const buckets = Math.max(1, Math.floor((maxPoints - 2) / 2));
  const size = n / buckets;
  steps.push(0); values.push(f(0));
  for (let b = 0; b < buckets; b++) {
    const a = Math.floor(b * size) + 1, e = Math.min(n - 1, Math.floor((b + 1) * size));
    let mi = a, ma = a;
    for (let i = a; i < e; i += Math.max(1, Math.floor((e - a) / 64))) { if (f(i) < f(mi)) mi = i; if (f(i) > f(ma)) ma = i; }
    const pair = mi < ma ? [mi, ma] : [ma, mi];
    pair.forEach((i) => { if (i > steps[steps.length - 1] && i < n - 1) { steps.push(i); values.push(f(i)); } });
  }
  steps.push(n - 1); values.push(f(n - 1));
  return { step: steps, value: values };
}

/* job 2's artifacts mirror what the curvature/eos kinds write: a final density.json and
 * eigenvalues.json (top-k per analysed step), plus per-step snapshots name_stepN.json. */
const ART_STEPS = [0, 300, 600];
function artifactsFor(id) {
  if (id === 7) {
    return [200, 400].map((st) => ({ name: 'checkpoint_step' + st + '.safetensors', content_type: 'application/octet-stream',
      size: 203000, created_at: T1 }));
  }
  if (id !== 2) return [];
  const out = [
    { name: 'density.json', content_type: 'application/json', size: 5321, created_at: T1 },
    { name: 'eigenvalues.json', content_type: 'application/json', size: 612, created_at: T1 },
    { name: 'params.safetensors', content_type: 'application/octet-stream', size: 1626000, created_at: T1 },
  ];
  ART_STEPS.forEach((s) => {
    out.push({ name: 'density_step' + s + '.json', content_type: 'application/json', size: 5300, created_at: T1 });
    out.push({ name: 'eigenvalues_step' + s + '.json', content_type: 'application/json', size: 700, created_at: T1 });
  });
  return out;
}
function density(step) {
  const top = 10 + step / 6.6;  // the outlier eigenvalue moves out as training sharpens
  const grid = [], dens = [];
  for (let i = 0; i < 256; i++) {
    const x = -5 + i * (top + 10) / 255;
    grid.push(x);
    dens.push(0.9 * Math.exp(-x * x / 2) / 2.5 + 0.02 * Math.exp(-(x - top) * (x - top) / 4) + 1e-6);
  }
  return { step: step, grid: grid, density: dens, sigma: 0.5, n_probes: 2,
    nodes: [[-3, 0.1, 2, top / 2, top - 1], [-2.5, 0.2, 3, top / 2 + 10, top + 1]],
    weights: [[0.1, 0.6, 0.25, 0.04, 0.01], [0.12, 0.55, 0.3, 0.02, 0.01]] };
}
function topk(step) { return [10 + step / 6, 8 + step / 12, 6 + step / 20, 4 + step / 40, 'NaN'].map((v) => v); }
function artifact(id, name) {
  if (id !== 2) return null;
  let m;
  if (name === 'density.json') return density(600);
  if ((m = /^density_step(\d+)\.json$/.exec(name)) && ART_STEPS.includes(Number(m[1]))) return density(Number(m[1]));
  if (name === 'eigenvalues.json') {
    return { steps: ART_STEPS, hessian_top_k: ART_STEPS.map((s) => topk(s).map((v) => (v === 'NaN' ? 1 : v))),
      ggn_top: ART_STEPS.map((s) => 9 + s / 6), hessian_trace: ART_STEPS.map((s) => 100 + s) };
  }
  if ((m = /^eigenvalues_step(\d+)\.json$/.exec(name)) && ART_STEPS.includes(Number(m[1]))) {
    const s = Number(m[1]);
    return { step: s, loss: 2 - s / 600, n: 200, n_params: 25450,
      hessian: { which: 'LA', eigenvalues: topk(s), residuals: [1e-16, 1e-16, 1e-15, 1e-13, 1e-10], steps: 24 },
      hessian_lm: { which: 'LM', eigenvalues: [topk(s)[0]], residuals: [1e-10], steps: 17 },
      ggn: { which: 'LA', eigenvalues: [9 + s / 6], residuals: [2e-10], steps: 16 },
      trace: { estimate: 100 + s, std_err: 8.1, n_probes: 20 } };
  }
  return null;
}

const kinds = { kinds: [
  { name: 'train', doc: 'Train an MLP with minibatch optimizers', chapter: 4, params: [
    { path: 'data.name', type: 'string', default: 'fashion-mnist', enum: ['fashion-mnist', 'synthetic'], doc: 'dataset' },
    { path: 'data.n_train', type: 'int', default: 60000, min: 1, max: 60000, doc: 'training subset' },
    { path: 'model.hidden', type: 'int_list', default: [256], min: 1, max: 8192, doc: 'hidden widths' },
    { path: 'model.activation', type: 'string', default: 'relu', enum: ['relu', 'tanh', 'linear'], doc: 'activation' },
    { path: 'optimizer.name', type: 'string', default: 'sgd', enum: ['sgd', 'adam', 'adamw'], doc: 'optimizer' },
    { path: 'optimizer.lr', type: 'number', default: 0.05, min: 0, max: 10, doc: 'learning rate' },
    { path: 'epochs', type: 'int', default: 1, min: 1, max: 1000, doc: 'epochs' },
    { path: 'steps', type: 'int', default: null, min: 1, max: 1e9, doc: 'steps (overrides epochs)' },
    { path: 'seed', type: 'int', default: 0, min: 0, max: 4294967295, doc: 'seed' } ] },
  { name: 'linreg', doc: 'Full-batch GD on least squares', chapter: 1, params: [
    { path: 'lr', type: 'number', default: '0.1', min: 0, max: 100, doc: 'learning rate' },
    { path: 'data.name', type: 'string', default: '"synthetic"', doc: 'dataset' } ] },
] };

/* the sweep fixture: a width sweep with 2 seeds and a power_offset fit */
function sweep7() {
  const widths = [16, 32, 64, 128, 256, 512];
  const children = [];
  let id = 100;
  const E = 0.3, A = 40, alpha = 0.45;
  const r = rng(7);
  widths.forEach((w) => {
    [0, 1].forEach((seed) => {
      const n = 784 * w + w + 10 * w + 10;
      const status = w === 512 && seed === 1 ? 'running' : 'succeeded';
      children.push({ id: id++, status: status, axes: { 'model.hidden[0]': w }, seed: seed,
        summary: status === 'succeeded' ? { n_params: n, test_loss: (E + A * Math.pow(n, -alpha)) * (1 + 0.03 * (r() - 0.5)), test_acc: 0.8 + 0.01 * Math.log2(w / 16) } : {} });
    });
  });
  const pts = children.filter((c) => c.status === 'succeeded').map((c) => ({ x: c.summary.n_params, y: c.summary.test_loss, job_id: c.id }));
  const cx = [], cy = [], lo = [], hi = [];
  for (let i = 0; i <= 50; i++) {
    const x = 1e4 * Math.pow(500, i / 50);
    const y = E + A * Math.pow(x, -alpha);
    cx.push(x); cy.push(y); lo.push(y * 0.96 - 0.005); hi.push(y * 1.04 + 0.005);
  }
  return { id: 7, name: 'width-sweep', kind: 'train', status: 'running', mode: 'grid', created_at: T0,
    axes: { 'model.hidden[0]': { values: widths } },
    counts: { queued: 0, running: 1, succeeded: 11, failed: 0 },
    children: children,
    fit: { law: 'power_offset', x: 'summary.n_params', y: 'summary.test_loss', n: pts.length,
      params: { E: { value: 0.301, lo: 0.29, hi: 0.312 }, A: { value: 39.1, lo: 30.2, hi: 51.0 }, alpha: { value: 0.448, lo: 0.42, hi: 0.47 } },
      points: pts, curve: { x: cx, y: cy, lo: lo, hi: hi } } };
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json', '.txt': 'text/plain; charset=utf-8' };

function send(res, code, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(body);
}
function notFound(res) { send(res, 404, { error: { code: 'not_found', message: 'not found' } }); }

function handler(webDir) {
  return (req, res) => {
    const u = new URL(req.url, 'http://x');
    const p = u.pathname;
    let m;
    if (p === '/healthz') return send(res, 200, { ok: true, queue_depth: 1, workers: 2 });
    if (p === '/api/v1/kinds') return send(res, 200, kinds);
    if (p === '/api/v1/jobs' && req.method === 'POST') {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        let parsed;
        try { parsed = JSON.parse(body); } catch (e) { return send(res, 400, { error: { code: 'invalid_json', message: 'malformed JSON' } }); }
        lastPost = parsed;
        if (parsed.params && parsed.params.fork) return send(res, 201, forkJobs[1]);  // the page then opens job 8
        send(res, 201, Object.assign({}, jobs[4], { id: 6 }));
      });
      return;
    }
    if (p === '/api/v1/jobs') {
      let list = jobs.slice().reverse();
      const st = u.searchParams.get('status'), kd = u.searchParams.get('kind'), tg = u.searchParams.get('tag');
      if (st) list = list.filter((j) => j.status === st);
      if (kd) list = list.filter((j) => j.kind === kd);
      if (tg) list = list.filter((j) => (j.tags || []).indexOf(tg) >= 0);
      return send(res, 200, { jobs: list, next_cursor: null });
    }
    if (p === '/api/v1/__last_post') return send(res, 200, { body: lastPost });
    if ((m = /^\/api\/v1\/jobs\/(\d+)$/.exec(p))) {
      const j = findJob(Number(m[1]));
      return j ? send(res, 200, j) : notFound(res);
    }
    if (p === '/api/v1/metrics') { /* several jobs; the fixture sweep's children have no metrics */
      const maxPoints = Number(u.searchParams.get('max_points')) || 1e9;
      const keys = u.searchParams.get('keys') ? u.searchParams.get('keys').split(',') : null;
      const jobs = {};
      (u.searchParams.get('jobs') || '').split(',').filter(Boolean).forEach((sid) => {
        const id = Number(sid), out = {};
        if (findJob(id)) {
          const raw = metricsFor(id);
          Object.keys(raw).forEach((k) => {
            if (raw[k] === null || (keys && keys.indexOf(k) < 0)) return;
            out[k] = downsample(raw[k].length, maxPoints, (i) => raw[k][i][1]);
            out[k].step = out[k].step.map((i) => raw[k][i][0]);
          });
        }
        jobs[sid] = { job_id: id, metrics: out };
      });
      return send(res, 200, { jobs });
    }
    if ((m = /^\/api\/v1\/jobs\/(\d+)\/metrics$/.exec(p))) {
      const id = Number(m[1]);
      if (!findJob(id)) return notFound(res);
      const maxPoints = Number(u.searchParams.get('max_points')) || 1e9;
      const raw = metricsFor(id), out = {};
      Object.keys(raw).forEach((k) => {
        if (raw[k] === null) return;
        out[k] = downsample(raw[k].length, maxPoints, (i) => raw[k][i][1]);
        out[k].step = out[k].step.map((i) => raw[k][i][0]);
      });
      if (id === 4) {
        out.loss = downsample(1000000, maxPoints, (s) => 1e-4 + Math.exp(-s / 1e5) * (1 + 0.3 * Math.sin(s / 997)));
        out.loss_theory = downsample(1000000, maxPoints, (s) => 1e-4 + Math.exp(-s / 1e5));
        out.loss_bias = downsample(1000000, maxPoints, (s) => 2 * Math.exp(-s / 1e4));  // down to ~1e-43
      }
      return send(res, 200, { metrics: out });
    }
    if ((m = /^\/api\/v1\/jobs\/(\d+)\/artifacts$/.exec(p))) return send(res, 200, { artifacts: artifactsFor(Number(m[1])) });
    if ((m = /^\/api\/v1\/jobs\/(\d+)\/artifacts\/(.+)$/.exec(p))) {
      const a = artifact(Number(m[1]), decodeURIComponent(m[2]));
      return a ? send(res, 200, a) : notFound(res);
    }
    if (p === '/api/v1/sweeps') return send(res, 200, { sweeps: [Object.assign({}, sweep7(), { children: undefined, fit: undefined })] });
    if (p === '/api/v1/sweeps/7') return send(res, 200, sweep7());
    if (p.startsWith('/api/')) return notFound(res);
    // static files from webDir, no escaping it
    let rel = decodeURIComponent(p === '/' ? '/index.html' : p);
    const file = path.resolve(webDir, '.' + rel);
    if (!file.startsWith(path.resolve(webDir) + path.sep)) return notFound(res);
    fs.readFile(file, (err, data) => {
      if (err) return notFound(res);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
        'X-Content-Type-Options': 'nosniff', 'Content-Security-Policy': "default-src 'self'; img-src 'self' data:" });
      res.end(data);
    });
  };
}

function start(webDir, port) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer(handler(webDir));
    srv.on('error', reject);
    srv.listen(port || 0, '127.0.0.1', () => resolve(srv));
  });
}

module.exports = { start };
if (require.main === module) {
  const web = process.argv[2] || path.join(__dirname, '..', '..', 'web');
  start(web, Number(process.argv[3]) || 8099).then((s) => console.log('fake tdlab API on http://127.0.0.1:' + s.address().port));
}
