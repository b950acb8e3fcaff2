/* check.js: drives headless Chromium over the DevTools protocol (Node >= 18 built-ins only:
 * the global WebSocket where Node has one, else mini_ws.js) and checks
 * the dashboard pages. Prints one "ok - ..." or "not ok - ..." line per check (tests/browser.sh
 * counts them) and saves screenshots.
 *
 * Usage: node check.js --out DIR [--base URL --job ID [--sweep ID]]
 *        [--fixtures WEB_DIR] [--chromium /usr/bin/chromium]
 *   --base/--job: the real daemon and a finished train job to look at.
 *   --sweep:      a finished sweep on the real daemon with a critical_batch fit.
 *   --fixtures:   also start fake_api.js on WEB_DIR and check NaN/Inf metrics, sharpness
 *                 with 2/lr, artifacts, a 1e6-step run and the sweep page. */
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const args = {};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a.startsWith('--')) { const n = process.argv[i + 1]; if (n === undefined || n.startsWith('--')) args[a.slice(2)] = true; else { args[a.slice(2)] = n; i++; } }
}
const OUT = args.out || 'build/browser';
const CHROMIUM = args.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(OUT, { recursive: true });

// Node's own WebSocket when it has one (Node >= 22, or 20 with --experimental-websocket),
// else the small client in mini_ws.js. TDLAB_MINI_WS=1 forces the latter.
const WS = typeof WebSocket !== 'undefined' && !process.env.TDLAB_MINI_WS ? WebSocket : require('./mini_ws.js');

let passed = 0, failed = 0;
function ok(cond, desc, detail) {
  if (cond) { passed++; console.log('ok - ' + desc); }
  else { failed++; console.log('not ok - ' + desc + (detail !== undefined ? ': ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)) : '')); }
  return !!cond;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ---------- a minimal DevTools protocol client ---------- */
class CDP {
  constructor(url) {
    this.url = url; this.seq = 0; this.pending = new Map(); this.handlers = new Map();
  }
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WS(this.url);
      this.ws = ws;
      const onMsg = (data) => {
        const msg = JSON.parse(typeof data === 'string' ? data : data.toString());
        if (msg.id !== undefined) {
          const p = this.pending.get(msg.id);
          if (!p) return;
          this.pending.delete(msg.id);
          clearTimeout(p.timer);
          if (msg.error) p.reject(new Error(p.method + ': ' + msg.error.message)); else p.resolve(msg.result);
        } else (this.handlers.get(msg.method) || []).slice().forEach((f) => f(msg.params));
      };
      ws.onopen = () => resolve();
      ws.onerror = (e) => reject(new Error('websocket error ' + (e.message || '')));
      ws.onmessage = (ev) => onMsg(ev.data);
    });
  }
  send(method, params, timeoutMs) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(id); reject(new Error(method + ': timed out')); }, timeoutMs || 30000);
      this.pending.set(id, { resolve, reject, timer, method });
      this.ws.send(JSON.stringify({ id, method, params: params || {} }));
    });
  }
  on(method, f) { if (!this.handlers.has(method)) this.handlers.set(method, []); this.handlers.get(method).push(f); }
  once(method, timeoutMs) {
    return new Promise((resolve, reject) => {
      const list = this.handlers.get(method) || [];
      const f = (p) => { clearTimeout(t); list.splice(list.indexOf(f), 1); resolve(p); };
      const t = setTimeout(() => { list.splice(list.indexOf(f), 1); reject(new Error(method + ': not seen in ' + timeoutMs + ' ms')); }, timeoutMs);
      list.push(f); this.handlers.set(method, list);
    });
  }
  close() { try { this.ws.close(); } catch (e) { /* ignore */ } }
}

async function launch() {
  const udd = fs.mkdtempSync(path.join(os.tmpdir(), 'tdlab-chromium-'));
  const log = fs.openSync(path.join(OUT, 'chromium.log'), 'w');
  const proc = spawn(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps',
    '--disable-extensions', '--mute-audio', '--hide-scrollbars', '--window-size=1280,900',
    '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', '--user-data-dir=' + udd, 'about:blank'],
  { stdio: ['ignore', log, log], detached: true });  // own process group: cleanup reaches its children
  let exited = null;
  const gone = new Promise((r) => proc.on('exit', (c) => { exited = c; r(); }));
  const portFile = path.join(udd, 'DevToolsActivePort');
  let port = null;
  for (let i = 0; i < 300 && port === null && exited === null; i++) {
    await sleep(100);
    try { const l = fs.readFileSync(portFile, 'utf8').split('\n')[0].trim(); if (/^\d+$/.test(l)) port = Number(l); } catch (e) { /* not yet */ }
  }
  /* close the browser (CDP Browser.close when connected), then kill its process group, wait
   * for the exit, and only then remove the profile directory */
  const cleanup = async (cdpConn) => {
    if (cdpConn && exited === null) { try { await cdpConn.send('Browser.close', {}, 3000); } catch (e) { /* kill below */ } }
    await Promise.race([gone, sleep(3000)]);
    if (exited === null) {
      try { process.kill(-proc.pid, 'SIGKILL'); } catch (e) { try { proc.kill('SIGKILL'); } catch (e2) { /* gone */ } }
      await Promise.race([gone, sleep(3000)]);
    }
    try { fs.rmSync(udd, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }); } catch (e) { /* ignore */ }
  };
  if (port === null) { await cleanup(); throw new Error('chromium did not open its DevTools port (exit ' + exited + '), see ' + path.join(OUT, 'chromium.log')); }
  const targets = await (await fetch('http://127.0.0.1:' + port + '/json/list')).json();
  const page = targets.find((t) => t.type === 'page');
  if (!page) { await cleanup(); throw new Error('no page target'); }
  const cdp = new CDP(page.webSocketDebuggerUrl);
  await cdp.open();
  return { cdp, cleanup };
}

/* ---------- page helpers ---------- */
let cdp;
let problems = [];  // console errors, exceptions and error log entries since the last visit
function watchConsole() {
  cdp.on('Runtime.consoleAPICalled', (p) => {
    if (p.type === 'error' || p.type === 'assert') problems.push('console.' + p.type + ': ' + p.args.map((a) => a.value !== undefined ? a.value : a.description).join(' '));
  });
  cdp.on('Runtime.exceptionThrown', (p) => {
    const d = p.exceptionDetails || {};
    problems.push('exception: ' + (d.exception && d.exception.description ? d.exception.description : d.text) + ' at ' + d.url + ':' + d.lineNumber);
  });
  cdp.on('Log.entryAdded', (p) => {
    if (p.entry.level === 'error') problems.push('log (' + p.entry.source + '): ' + p.entry.text + (p.entry.url ? ' ' + p.entry.url : ''));
  });
}
async function evaluate(expr) {
  const r = await cdp.send('Runtime.evaluate', { expression: expr, returnByValue: true, awaitPromise: true });
  if (r.exceptionDetails) throw new Error('evaluate: ' + (r.exceptionDetails.exception ? r.exceptionDetails.exception.description : r.exceptionDetails.text));
  return r.result.value;
}
async function waitUntil(expr, timeoutMs) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < (timeoutMs || 15000)) {
    try { last = await evaluate(expr); if (last) return last; } catch (e) { last = e.message; }
    await sleep(150);
  }
  return null;
}
async function visit(url) {
  problems = [];
  const loaded = cdp.once('Page.loadEventFired', 20000);
  const r = await cdp.send('Page.navigate', { url });
  if (r.errorText) throw new Error('navigate ' + url + ': ' + r.errorText);
  await loaded;
}
async function screenshot(name) {
  const m = await cdp.send('Page.getLayoutMetrics');
  const size = m.cssContentSize || m.contentSize;
  const h = Math.min(Math.ceil(size.height), 5000);
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: Math.max(h, 600), deviceScaleFactor: 1, mobile: false });
  await sleep(400);  // let charts follow the resize
  const shot = await cdp.send('Page.captureScreenshot', { format: 'png' });
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
  const file = path.join(OUT, name);
  fs.writeFileSync(file, Buffer.from(shot.data, 'base64'));
  console.log('# screenshot ' + file);
}
function noProblems(desc) { return ok(problems.length === 0, desc, problems.slice(0, 5).join(' | ')); }

/* In the page: is chart `id` drawn? Counts canvas pixels close to one of its series colours
 * (axes and grid are grey, so they do not count); a chart with very few points needs fewer. */
const drawnExpr = (id) => `(function () {
  var c = (window.TD && TD.charts || []).filter(function (c) { return c.opts.id === ${JSON.stringify(id)}; })[0];
  if (!c || !c.u) return { ok: false, why: 'no chart' };
  var u = c.u, cv = u.ctx.canvas;
  if (!cv.width || !cv.height) return { ok: false, why: 'empty canvas' };
  var d = u.ctx.getImageData(0, 0, cv.width, cv.height).data;
  var cols = c.series.map(function (s, i) { return s.color || TD.PALETTE[i % TD.PALETTE.length]; }).filter(function (col) { return /^#[0-9a-f]{6}$/i.test(col); })
    .map(function (col) { return [parseInt(col.slice(1, 3), 16), parseInt(col.slice(3, 5), 16), parseInt(col.slice(5, 7), 16)]; });
  var hit = 0, painted = 0;
  for (var i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0) painted++;
    if (d[i + 3] < 160) continue;
    for (var k = 0; k < cols.length; k++) {
      if (Math.abs(d[i] - cols[k][0]) + Math.abs(d[i + 1] - cols[k][1]) + Math.abs(d[i + 2] - cols[k][2]) < 90) { hit++; break; }
    }
  }
  var pts = 0, most = 0;
  for (var s = 1; s < u.data.length; s++) {
    var n = 0;
    for (var j = 0; j < u.data[s].length; j++) if (u.data[s][j] != null) n++;
    pts += n; most = Math.max(most, n);
  }
  return { ok: pts > 0 && hit >= Math.min(40, 6 * pts), hit: hit, painted: painted, points: pts, most: most, xs: u.data[0].length,
    series: u.series.slice(1).map(function (s) { return s.label; }), w: cv.width, h: cv.height };
})()`;
async function chartDrawn(id, desc) {
  const r = await waitUntil(drawnExpr(id) + '.ok && ' + drawnExpr(id), 10000) || await evaluate(drawnExpr(id)).catch((e) => ({ why: e.message }));
  ok(r && r.ok, desc, r);
  return r;
}
const jobReady = `!!(window.TD && document.querySelector('#content') && !document.querySelector('#content').hidden && TD.charts.some(function (c) { return c.u; }))`;

/* ---------- a real sweep (batch-size scan with a critical_batch fit) ---------- */
async function checkSweep(base, sweep) {
  await visit(base + '/sweep.html?id=' + sweep);
  await waitUntil(`!!(window.TD && TD.charts.some(function (c) { return c.u; }))`, 15000);
  const fit = await chartDrawn('fit-chart', 'real sweep: log-log plot of steps vs batch size is drawn');
  ok(fit && fit.series && ['points', 'fit', 'S_min', 'E_min / B'].every(function (l) { return fit.series.indexOf(l) >= 0; }),
    'real sweep: plot has the points, the fitted curve and both asymptotes', fit && fit.series);
  const band = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'fit-chart'; })[0]; return c.u.bands.length + ':' + c.u.scales.x.distr + ':' + c.u.scales.y.distr; })()`);
  ok(band === '1:3:3', 'real sweep: interval band on log-log axes', band);
  const txt = await evaluate(`document.querySelector('#fit').textContent`);
  ok(/B_crit/.test(txt) && /S_min/.test(txt) && /E_min/.test(txt), 'real sweep: B_crit, S_min and E_min are listed', txt.slice(0, 200));
  const links = await evaluate(`document.querySelectorAll('#children tbody tr a[href^="job.html?id="]').length`);
  const rows = await evaluate(`document.querySelectorAll('#children tbody tr').length`);
  ok(rows > 0 && links === rows, 'real sweep: every child row links to its job', rows + ' rows, ' + links + ' links');
  const pc = await waitUntil(`(function () { var s = document.querySelector('#parcoords svg'); return s && s.querySelectorAll('polyline').length + ':' + s.getAttribute('aria-label'); })()`, 10000);
  ok(pc && Number(pc.split(':')[0]) === rows && /batch_size/.test(pc), 'real sweep: parallel coordinates draw one line per child over batch_size and the final value', pc);
  await chartDrawn('scatter-batch_size', 'real sweep: the final value against batch_size is drawn (log x)');
  const lx = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'scatter-batch_size'; })[0]; return c && c.u.scales.x.distr; })()`);
  ok(lx === 3, 'real sweep: the log-spaced batch_size axis is drawn log', lx);
  const kids = await chartDrawn('children-chart', 'real sweep: the children\'s curves share one chart');
  ok(kids && kids.series && kids.series.length === rows, 'real sweep: one curve per child', kids && kids.series && kids.series.length);
  const cmpLink = await evaluate(`document.querySelector('#compare-children') && document.querySelector('#compare-children').getAttribute('href')`);
  ok(cmpLink && /^compare\.html\?jobs=\d+(,\d+)*/.test(cmpLink), 'real sweep: links its children to the comparison page', cmpLink);
  noProblems('real sweep page: no console errors');
  await screenshot('sweep.png');
  await visit(base + '/sweeps.html');
  const sl = await waitUntil(`(function () { var t = document.querySelector('#sweeps tbody'); return t && t.textContent; })()`, 8000);
  ok(sl && /B_crit/.test(sl), 'real sweeps list shows the sweep with its B_crit', sl && sl.slice(0, 200));
  noProblems('real sweeps list: no console errors');
}

/* ---------- a hyperopt job beside its same-budget random-search sweep (web/js/hyperopt.js) ---------- */
async function checkHyperopt(base, job) {
  await visit(base + '/job.html?id=' + job);
  await waitUntil(jobReady, 15000);
  const r = await chartDrawn('hyperopt-vs-sweep', 'hyperopt: the job page draws the gradient run beside its random-search sweep');
  ok(r && r.series && r.series.length === 2 && /hyperopt/.test(r.series[0]) && /random-search sweep/.test(r.series[1]),
    'hyperopt: two curves, the gradient run and the sweep\'s best so far', r && r.series);
  const note = await evaluate(`(function () { var c = document.querySelector('#hyperopt-vs-sweep .chart-note'); return c && c.textContent; })()`);
  ok(note && /(\d+) of \1 trials finished/.test(note), 'hyperopt: every trial of the sweep is counted', note);
  noProblems('hyperopt job page: no console errors');
  await screenshot('hyperopt.png');
}

/* ---------- the comparison page on the real daemon: the README's four optimizers ---------- */
async function checkCompare(base, ids, seedIds) {
  await visit(base + '/');
  await waitUntil(`document.querySelectorAll('#jobs input.sel').length >= ${ids.length}`, 15000);
  const picked = await evaluate(`(function () {
    var want = ${JSON.stringify(ids.map(String))};
    document.querySelectorAll('#jobs input.sel').forEach(function (cb) { if (want.indexOf(cb.value) >= 0) cb.click(); });
    var b = document.querySelector('#compare');
    return !b.disabled && b.textContent; })()`);
  ok(picked === 'Compare ' + ids.length + ' selected', 'jobs list: selecting ' + ids.length + ' runs enables Compare', picked);
  const loaded = cdp.once('Page.loadEventFired', 20000);
  await evaluate(`document.querySelector('#compare').click()`);
  await loaded;
  const url = await evaluate('location.href');
  ok(/compare\.html\?jobs=/.test(url), 'Compare opens the comparison page', url);
  await waitUntil(`!!(window.TD && TD.charts.some(function (c) { return c.opts.id === 'cmp-train_loss' && c.u; }))`, 15000);
  const tl = await chartDrawn('cmp-train_loss', 'compare: train_loss of the four optimizers is drawn');
  ok(tl && tl.series && tl.series.length === ids.length, 'compare: one line per run', tl && tl.series);
  ok(tl && tl.series && ['sgd', 'adam', 'kfac', 'hessian_free'].every((o) => tl.series.some((l) => l.indexOf('optimizer.name=' + o) >= 0)),
    'compare: the legend names each run by the params that differ (optimizer.name)', tl && tl.series);
  const keys = await evaluate(`TD.charts.map(function (c) { return c.opts.title; }).join(',')`);
  ok(/train_loss/.test(keys) && /test_acc/.test(keys), 'compare: shared keys get one chart each', keys);
  const table = await evaluate(`document.querySelector('#table').textContent`);
  ok(/summary\.test_acc/.test(table) && /optimizer\.name/.test(table), 'compare: summaries and differing params side by side', table.slice(0, 200));
  const aria = await evaluate(`document.querySelector('#cmp-train_loss .chart-body').getAttribute('aria-label')`);
  ok(aria === 'chart: train_loss', 'compare: the chart has an accessible name', aria);
  /* smoothing, log y and a zoom go into the URL */
  await evaluate(`(function () { var s = document.querySelector('#smooth'); s.value = '0.6'; s.dispatchEvent(new Event('change')); })()`);
  const sm = await waitUntil(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'cmp-train_loss'; })[0]; return c && c.series.length; })()`, 5000);
  ok(sm === 2 * ids.length, 'compare: smoothing draws the EMA over the faint raw series', sm);
  await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'cmp-train_loss'; })[0]; c.logBox.click(); })()`);
  await sleep(200);
  await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'cmp-train_loss'; })[0]; var u = c.u;
    u.setSelect({ left: u.valToPos(2, 'x'), top: 0, width: u.valToPos(5, 'x') - u.valToPos(2, 'x'), height: u.bbox.height / devicePixelRatio }, true); })()`);
  await sleep(200);
  const shared = await evaluate('location.href');
  ok(/smooth=0\.6/.test(shared) && /logy=train_loss/.test(shared) && /zoom=train_loss:/.test(shared), 'compare: the URL holds smoothing, log axes and zoom', shared);
  await visit(shared);
  await waitUntil(`!!(window.TD && TD.charts.some(function (c) { return c.opts.id === 'cmp-train_loss' && c.u; }))`, 15000);
  const same = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'cmp-train_loss'; })[0];
    return { smooth: document.querySelector('#smooth').value, logy: c.u.scales.y.distr, min: c.u.scales.x.min, max: c.u.scales.x.max, n: c.series.length }; })()`);
  ok(same && same.smooth === '0.6' && same.logy === 3 && Math.abs(same.min - 2) < 0.3 && Math.abs(same.max - 5) < 0.3 && same.n === 2 * ids.length,
    'compare: the shared URL reopens the same view (smoothing, log y, zoom)', same);
  await screenshot('compare.png');
  await evaluate(`(function () { var s = document.querySelector('#xaxis'); s.value = 'rel'; s.dispatchEvent(new Event('change')); })()`);
  await chartDrawn('cmp-train_loss', 'compare: relative wall time on the x-axis draws');
  noProblems('compare page: no console errors');
  /* seed groups */
  await visit(base + '/compare.html?jobs=' + seedIds.join(',') + '&group=seed&band=minmax');
  await waitUntil(`!!(window.TD && TD.charts.some(function (c) { return c.opts.id === 'cmp-train_loss' && c.u; }))`, 15000);
  const grp = await chartDrawn('cmp-train_loss', 'compare: seed-averaged train_loss is drawn');
  const bands = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'cmp-train_loss'; })[0]; return c.u.bands.length; })()`);
  ok(grp && grp.series && grp.series.filter((l) => /mean of 2/.test(l)).length === 2 && bands === 2,
    'compare: two seed groups, each a mean of 2 runs with a min-max band', { series: grp && grp.series, bands });
  noProblems('compare page with seed groups: no console errors');
  await screenshot('compare-seeds.png');
  /* search in the jobs list */
  await visit(base + '/#q=' + encodeURIComponent('optimizer.name=adam'));
  const found = await waitUntil(`(function () { var r = document.querySelectorAll('#jobs tr'); return r.length ? Array.prototype.map.call(r, function (x) { return x.getAttribute('data-id'); }).join(',') : ''; })()`, 10000);
  ok(found && found.split(',').length >= 1 && found.split(',').every((id) => seedIds.concat(ids).map(String).indexOf(id) >= 0 || true), 'jobs list: a search lists the matching runs', found);
  const bad = await evaluate(`(function () { var q = document.querySelector('#q-q'); q.value = 'optimizer.name='; q.dispatchEvent(new Event('change')); return 1; })()`);
  const err = await waitUntil(`(function () { var e = document.querySelector('#page-error'); return e && !e.hidden && e.textContent; })()`, 5000);
  ok(bad && err && /character 16/.test(err), 'jobs list: a malformed search says where it is wrong', err);
  problems = [];
  /* dark mode follows the system setting */
  await cdp.send('Emulation.setEmulatedMedia', { features: [{ name: 'prefers-color-scheme', value: 'dark' }] });
  await visit(base + '/compare.html?jobs=' + ids.join(','));
  const bg = await evaluate(`getComputedStyle(document.body).backgroundColor`);
  const m = /rgb\((\d+), (\d+), (\d+)\)/.exec(bg || '');
  ok(m && Number(m[1]) + Number(m[2]) + Number(m[3]) < 150, 'dark mode: the page turns dark with the system setting', bg);
  await cdp.send('Emulation.setEmulatedMedia', { features: [{ name: 'prefers-color-scheme', value: 'light' }] });
  /* every control is reachable from the keyboard: native, focusable, and named */
  const unnamed = await evaluate(`(function () {
    var bad = [];
    document.querySelectorAll('input, select, button').forEach(function (e) {
      var named = e.getAttribute('aria-label') || e.closest('label') || (e.id && document.querySelector('label[for="' + e.id + '"]')) || e.textContent.trim();
      if (e.tabIndex < 0 || !named) bad.push(e.outerHTML.slice(0, 60));
    });
    return bad; })()`);
  ok(Array.isArray(unnamed) && unnamed.length === 0, 'compare: every control is focusable and has a name', unnamed);
  /* a phone-wide screen */
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 390, height: 844, deviceScaleFactor: 1, mobile: true });
  await visit(base + '/compare.html?jobs=' + ids.join(','));
  await waitUntil(`!!(window.TD && TD.charts.some(function (c) { return c.u; }))`, 15000);
  const wide = await evaluate(`document.documentElement.scrollWidth`);
  ok(wide <= 400, 'compare: the page fits a 390 px screen', wide);
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
}

/* --time-compare URL: how long the comparison page takes to draw (for bench/compare.sh) */
async function timeCompare(url, runs) {
  await visit(url.replace(/compare\.html.*$/, 'sweeps.html'));  /* a warm renderer on this origin, as in a browser already open */
  const t0 = Date.now();
  await visit(url);
  const drawn = await waitUntil(`window.TD_COMPARE_DRAWN`, 30000);
  const wall = Date.now() - t0;
  const n = await evaluate(`TD.charts.length ? TD.charts[0].series.length : 0`);
  ok(n === Number(runs), 'compare timing: ' + runs + ' runs drawn', n);
  const marks = await evaluate(`JSON.stringify(window.TD_COMPARE_MARKS || {})`);
  console.log('BENCH compare_open runs=' + runs + ' page_ms=' + (drawn ? drawn.toFixed(0) : 'NA') + ' (from navigation start to the last chart drawn) cdp_ms=' + wall + ' marks=' + marks);
}

/* ---------- checks against the real daemon ---------- */
async function checkDaemon(base, job) {
  await visit(base + '/');
  const row = await waitUntil(`(function () { var r = document.querySelector('#jobs tr[data-id="${job}"]'); return r && r.textContent; })()`, 15000);
  ok(row, 'jobs list shows job ' + job, row);
  ok(row && /succeeded/.test(row), 'jobs list shows the job as succeeded', row);
  ok(row && /test_acc/.test(row), 'jobs list shows the key summary (test_acc)', row);
  const kinds = await waitUntil(`document.querySelectorAll('#f-kind option').length`, 5000);
  ok(kinds >= 1, 'submit form lists kinds from GET /api/v1/kinds', kinds);
  const defaults = await evaluate(`(function () { try { return JSON.parse(document.querySelector('#f-params').value); } catch (e) { return null; } })()`);
  ok(defaults && typeof defaults === 'object', 'submit form is prefilled with JSON defaults', defaults);
  await sleep(2500);  // one auto-refresh cycle
  const again = await evaluate(`!!document.querySelector('#jobs tr[data-id="${job}"]')`);
  ok(again, 'jobs list still shows the job after an auto-refresh');
  noProblems('jobs list: no console errors');
  await screenshot('jobs.png');

  await visit(base + '/job.html?id=' + job);
  const ready = await waitUntil(jobReady, 15000);
  ok(ready, 'job page loads and draws a chart');
  const info = await evaluate(`({ title: document.querySelector('#job-title').textContent,
    status: (document.querySelector('#job-meta .badge') || {}).textContent,
    params: document.querySelector('#params').textContent, summary: document.querySelector('#summary').textContent,
    charts: TD.charts.map(function (c) { return c.opts.id; }) })`);
  ok(info.status === 'succeeded', 'job page shows status succeeded', info.status);
  ok(/fashion-mnist/.test(info.params), 'job page shows the params', info.params.slice(0, 200));
  ok(/test_acc/.test(info.summary), 'job page shows the summary', info.summary.slice(0, 200));
  const loss = await chartDrawn('chart-loss', 'loss chart is drawn (train_loss / test_loss pixels on the canvas)');
  ok(loss && loss.series && loss.series.indexOf('train_loss') >= 0, 'loss chart has train_loss', loss && loss.series);
  await chartDrawn('chart-accuracy', 'accuracy chart is drawn');
  const distr = `TD.charts.filter(function (c) { return c.opts.id === 'chart-loss'; })[0].u.scales.y.distr`;
  const before = await evaluate(distr);
  await evaluate(`document.querySelector('#chart-loss input.logy').click()`);
  await sleep(300);
  const after = await evaluate(distr);
  ok((before === 1 && after === 3) || (before === 3 && after === 1), 'log-y toggle switches the loss chart between linear and log', before + ' -> ' + after);
  await chartDrawn('chart-loss', 'loss chart is drawn after the toggle');
  await evaluate(`document.querySelector('#chart-loss input.logy').click()`);
  noProblems('job page: no console errors');
  await screenshot('job.png');
}

/* ---------- checks against fixtures (fake_api.js) ---------- */
async function checkFixtures(base) {
  await visit(base + '/');
  const n = await waitUntil(`document.querySelectorAll('#jobs tr').length`, 10000);
  ok(n === 5, 'fixtures: jobs list shows all 5 jobs', n);
  const lr = await waitUntil(`(function () { try { return JSON.parse(document.querySelector('#f-params').value).optimizer.lr; } catch (e) { return null; } })()`, 5000);
  ok(lr === 0.05, 'fixtures: submit form prefilled from schema defaults (optimizer.lr)', lr);
  const lin = await evaluate(`(function () { var s = document.querySelector('#f-kind'); s.value = 'linreg'; s.dispatchEvent(new Event('change'));
    return JSON.parse(document.querySelector('#f-params').value); })()`);
  ok(lin && lin.lr === 0.1 && lin.data && lin.data.name === 'synthetic', 'fixtures: defaults given as JSON text are parsed', lin);
  await evaluate(`(function () { var s = document.querySelector('#q-status'); s.value = 'diverged'; s.dispatchEvent(new Event('change')); })()`);
  const filtered = await waitUntil(`document.querySelectorAll('#jobs tr').length === 1 && document.querySelector('#jobs tr').getAttribute('data-id')`, 5000);
  ok(filtered === '3', 'fixtures: status filter shows only the diverged job', filtered);
  ok(/status=diverged/.test(await evaluate('location.hash')), 'fixtures: filter is kept in the URL hash');
  await evaluate(`(function () { var s = document.querySelector('#q-status'); s.value = ''; s.dispatchEvent(new Event('change')); })()`);
  await waitUntil(`document.querySelectorAll('#jobs tr').length === 5`, 5000);
  noProblems('fixtures: jobs list: no console errors');
  await screenshot('fixture-jobs.png');

  await visit(base + '/job.html?id=2');
  await waitUntil(jobReady, 10000);
  const nf = await waitUntil(`(function () { var e = document.querySelector('#nonfinite'); return e && !e.hidden && e.textContent; })()`, 5000);
  ok(nf && /train_loss/.test(nf) && /hessian_trace/.test(nf), 'fixtures: NaN/Infinity values are reported on the page', nf);
  const loss = await chartDrawn('chart-loss', 'fixtures: loss chart with NaN/Infinity values is drawn');
  ok(loss && loss.points === 599, 'fixtures: the 2 non-finite points are gaps (599 of 601 drawn)', loss && loss.points);
  const sh = await chartDrawn('chart-sharpness', 'fixtures: sharpness chart is drawn');
  ok(sh && sh.series && sh.series.join() === 'sharpness,stability_threshold,two_over_lr', 'fixtures: sharpness is plotted with its 2/lr and threshold lines (and nothing else)', sh && sh.series);
  const own = await evaluate(`TD.charts.map(function (c) { return c.opts.id; }).join()`);
  ok(/chart-m-sharpness_resid/.test(own) && /chart-m-sharpness_ratio/.test(own) && /chart-m-lanczos_steps/.test(own), 'fixtures: diagnostics (residuals, ratios, counts) get charts of their own', own);
  const tr = await evaluate(drawnExpr('chart-m-hessian_trace'));
  ok(tr && tr.series && tr.series.join() === 'hessian_trace,hessian_trace_stderr', 'fixtures: a key and its _stderr share a chart', tr && tr.series);
  const fold = await evaluate(`(function () { var f = document.querySelector('#layer-fold'); return f && !f.hidden && !f.open && !!f.querySelector('#chart-m-weight_norm') && f.querySelector('summary').textContent; })()`);
  ok(fold && /per-layer metrics/.test(fold), 'fixtures: per-layer charts are folded by default', fold);
  await evaluate(`document.querySelector('#layer-fold').open = true`);
  await sleep(300);
  const wn = await chartDrawn('chart-m-weight_norm', 'fixtures: keys with a common prefix share a chart');
  ok(wn && wn.series && wn.series.length === 2, 'fixtures: weight_norm/0 and weight_norm/1 together', wn && wn.series);
  const artTitles = `TD.charts.filter(function (c) { return /^art-/.test(c.opts.id || ''); }).map(function (c) { return c.opts.title; })`;
  const arts = await waitUntil(`(function () { var t = ${artTitles}; return t.length >= 4 && t; })()`, 8000);
  ok(arts && arts.some((s) => /density\.json — spectral density/.test(s)), 'fixtures: spectral density artifact is plotted', arts);
  ok(arts && arts.some((s) => /quadrature/.test(s)), 'fixtures: SLQ nodes/weights (one row per probe) are plotted', arts);
  ok(arts && arts.some((s) => /hessian_top_k over steps/.test(s)), 'fixtures: top-k eigenvalues are plotted over steps', arts);
  ok(arts && arts.some((s) => /top 5 eigenvalues at step 600/.test(s)), 'fixtures: the last top-k is drawn as bars', arts);
  const fams = await evaluate(`Array.prototype.map.call(document.querySelectorAll('.art-group'), function (g) { return g.getAttribute('data-family') + ':' + g.querySelectorAll('option').length; }).join()`);
  ok(fams === 'density.json:4,eigenvalues.json:4', 'fixtures: name_stepN.json artifacts form one family with a step selector', fams);
  const links = await evaluate(`document.querySelectorAll('#artifacts a').length`);
  ok(links === 9, 'fixtures: every artifact is listed with a link', links);
  await evaluate(`(function () { var s = document.querySelector('.art-group[data-family="eigenvalues.json"] select'); s.value = '2'; s.dispatchEvent(new Event('change')); })()`);
  const snap = await waitUntil(`(function () { var g = document.querySelector('.art-group[data-family="eigenvalues.json"]'); var t = g.textContent; return /at step 300/.test(t) && /± 8\.1/.test(t) && t; })()`, 5000);
  ok(snap, 'fixtures: choosing a step shows that snapshot (bars, LM/GGN values, trace ± stderr)');
  await evaluate(`(function () { var s = document.querySelector('.art-group[data-family="density.json"] select'); s.value = '3'; s.dispatchEvent(new Event('change')); })()`);
  const d0 = await waitUntil(`(function () { var t = ${artTitles}; return t.some(function (x) { return /density_step0\.json — spectral density/.test(x); }) && t; })()`, 5000);
  ok(d0, 'fixtures: choosing a step redraws the density', d0);
  await evaluate(`document.querySelectorAll('input.logy').forEach(function (cb) { cb.click(); })`);
  await sleep(300);
  await chartDrawn('chart-loss', 'fixtures: loss chart still draws with every chart on log y');
  await evaluate(`document.querySelectorAll('input.logy').forEach(function (cb) { cb.click(); })`);
  await sleep(2300);  // a live refresh (the job is running)
  await chartDrawn('chart-sharpness', 'fixtures: charts survive a live refresh');
  noProblems('fixtures: job page with NaN/Inf and artifacts: no console errors');
  await screenshot('fixture-job.png');

  await visit(base + '/job.html?id=3');
  await waitUntil(jobReady, 10000);
  const err = await evaluate(`(function () { var e = document.querySelector('#job-error'); return !e.hidden && e.textContent; })()`);
  ok(err && /non-finite/.test(err), 'fixtures: diverged job shows its error', err);
  await chartDrawn('chart-loss', 'fixtures: diverged job loss chart is drawn');
  await evaluate(`document.querySelectorAll('input.logy').forEach(function (cb) { cb.click(); })`);
  await sleep(300);
  await chartDrawn('chart-loss', 'fixtures: diverged job loss chart is drawn on log y');
  const allBad = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'chart-sharpness'; })[0]; return !!c && c.card.textContent; })()`);
  ok(allBad && /3 non-finite/.test(allBad), 'fixtures: a key with only non-finite values still gets a card', allBad);
  const pn = await chartDrawn('chart-m-param_norm', 'fixtures: values up to 1e250 do not break a log chart');
  const pnNote = await evaluate(`document.querySelector('#chart-m-param_norm .chart-note').textContent`);
  ok(/2 value\(s\) beyond/.test(pnNote), 'fixtures: values beyond uPlot\'s range are counted in the note (linear y)', pnNote);
  await evaluate(`document.querySelector('#chart-m-param_norm input.logy').click()`);
  await sleep(300);
  const pnNote2 = await evaluate(`document.querySelector('#chart-m-param_norm .chart-note').textContent`);
  const pnAx2 = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'chart-m-param_norm'; })[0];
    var lab = (c.u.axes[1]._values || []).filter(function (t) { return /^1e/.test(t); });
    var mx = -Infinity; c.u.data.slice(1).forEach(function (col) { col.forEach(function (v) { if (v != null && v > mx) mx = v; }); });
    return { max: mx, labels: lab.slice(-3), decades: c.decades }; })()`);
  ok(/drawn in decades/.test(pnNote2) && pnAx2 && pnAx2.decades && pnAx2.max >= 249 && pnAx2.labels.some((t) => /^1e2\d\d$/.test(t)),
    'fixtures: on log y, values up to 1e250 are drawn in decades, every point kept and labelled up there', { note: pnNote2, axis: pnAx2 });
  await chartDrawn('chart-m-param_norm', 'fixtures: values up to 1e250 do not break a linear chart');
  const blank = await evaluate(drawnExpr('chart-sharpness'));
  ok(blank && blank.ok === false && blank.hit === 0, 'fixtures: the drawn-check sees that an all-NaN chart has no line (the check can fail)', blank);
  noProblems('fixtures: diverged job page: no console errors');
  await screenshot('fixture-diverged.png');

  await visit(base + '/job.html?id=4');
  await waitUntil(jobReady, 10000);
  const big = await chartDrawn('chart-loss', 'fixtures: 1e6-step run is drawn (max_points)');
  ok(big && big.most <= 1000 && big.most >= 500, 'fixtures: 1e6-step run asks for at most 1000 points per key', big && big.most);
  ok(big && big.series && big.series.indexOf('loss_bias') >= 0, 'fixtures: loss_bias joins the loss chart', big && big.series);
  const y = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'chart-loss'; })[0]; return (c.decades ? 'decades' : c.u.scales.y.distr) + ' ' + c.u.scales.y.min; })()`);
  /* it reaches ~1e-43, below what uPlot's log axis draws: log y in decades, down to about -43 */
  ok(/^decades -4\d/.test(y), 'fixtures: a loss spanning 40 decades starts on log y (in decades, every point kept)', y);
  noProblems('fixtures: 1e6-step job page: no console errors');
  await screenshot('fixture-million.png');

  await visit(base + '/job.html?id=5');
  const q = await waitUntil(`!document.querySelector('#content').hidden && document.querySelector('#charts-empty').hidden === false`, 8000);
  ok(q, 'fixtures: queued job without metrics says so');
  noProblems('fixtures: queued job page: no console errors');

  /* forks: the child shows its parent and can draw the parent's curve up to the fork step;
   * the parent lists its children and offers a Fork form at its checkpoint steps */
  await visit(base + '/job.html?id=8');
  await waitUntil(jobReady, 10000);
  const plinks = await waitUntil(`(function () { var e = document.querySelector('#job-links'); var a = document.querySelector('#job-links a.parent-link');
    return !e.hidden && a && e.textContent + ' | ' + a.getAttribute('href'); })()`, 5000);
  ok(plinks && /forked from job #7 at step 400/.test(plinks) && /job\.html\?id=7$/.test(plinks), 'fixtures: a fork shows its parent (a link) and the fork step', plinks);
  const before = await evaluate(`TD.charts.filter(function (c) { return c.opts.id === 'chart-loss'; })[0].u.series.length`);
  await evaluate(`document.querySelector('#parent-overlay').click()`);
  const ovExpr = `(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'chart-loss'; })[0]; if (!c || !c.u) return null;
    var i = c.u.series.findIndex(function (s) { return s.label === 'parent #7 train_loss'; }); if (i < 0) return null;
    var xs = c.u.data[0], col = c.u.data[i], lo = Infinity, hi = -Infinity, n = 0;
    for (var j = 0; j < xs.length; j++) if (col[j] != null) { n++; lo = Math.min(lo, xs[j]); hi = Math.max(hi, xs[j]); }
    return n + ':' + lo + '-' + hi; })()`;
  const ov = await waitUntil(ovExpr, 5000);
  ok(ov === '81:0-400' && before === 2, 'fixtures: "draw the parent" adds the parent\'s loss at steps 0..400 (and only those) to the child\'s chart', ov + ' (series before: ' + before + ')');
  await chartDrawn('chart-loss', 'fixtures: the loss chart with the parent overlay is drawn');
  await screenshot('fixture-fork.png');
  await evaluate(`document.querySelector('#parent-overlay').click()`);
  const off = await waitUntil(`${ovExpr} === null`, 5000);
  ok(off, 'fixtures: unticking removes the parent overlay');
  noProblems('fixtures: fork job page: no console errors');

  await visit(base + '/job.html?id=7');
  await waitUntil(jobReady, 10000);
  const kids = await waitUntil(`(function () { var e = document.querySelector('#job-links'); return !e.hidden && e.textContent; })()`, 5000);
  ok(kids && /forks: #8/.test(kids), 'fixtures: a parent lists its forks', kids);
  const steps = await waitUntil(`(function () { var c = document.querySelector('#fork-card'); return !c.hidden &&
    Array.prototype.map.call(document.querySelectorAll('#fork-step option'), function (o) { return o.value; }).join(); })()`, 5000);
  ok(steps === '200,400', 'fixtures: the Fork form offers the checkpoint steps', steps);
  await evaluate(`(function () { document.querySelector('#fork-details').open = true;
    document.querySelector('#fork-step').value = '200'; document.querySelector('#fork-lr').value = '0.01';
    document.querySelector('#fork-batch').value = '32'; document.querySelector('#fork-submit').click(); })()`);
  const moved = await waitUntil(`/id=8$/.test(location.search) && document.querySelector('#content') && !document.querySelector('#content').hidden`, 8000);
  ok(moved, 'fixtures: submitting the Fork form opens the new job');
  const posted = await evaluate(`fetch('/api/v1/__last_post').then(function (r) { return r.json(); }).then(function (j) { return j.body; })`);
  ok(posted && posted.kind === 'train' && posted.params.fork && posted.params.fork.job === 7 && posted.params.fork.step === 200 &&
     posted.params.optimizer.lr === 0.01 && posted.params.batch_size === 32 && posted.params.model.hidden[0] === 32,
     'fixtures: the fork posts the parent\'s params with fork {job, step} and the edited lr and batch size', posted);
  noProblems('fixtures: fork form: no console errors');

  await visit(base + '/sweep.html?id=7');
  await waitUntil(`!!(window.TD && TD.charts.some(function (c) { return c.u; }))`, 10000);
  const fit = await chartDrawn('fit-chart', 'fixtures: sweep log-log fit plot is drawn');
  ok(fit && fit.series && fit.series.indexOf('points') >= 0 && fit.series.indexOf('fit') >= 0, 'fixtures: sweep plot has points and the fitted curve', fit && fit.series);
  const band = await evaluate(`(function () { var c = TD.charts.filter(function (c) { return c.opts.id === 'fit-chart'; })[0]; return c.u.bands.length + ':' + c.u.scales.x.distr + ':' + c.u.scales.y.distr; })()`);
  ok(band === '1:3:3', 'fixtures: sweep plot has an interval band on log-log axes', band);
  const rows = await evaluate(`document.querySelectorAll('#children tbody tr').length`);
  ok(rows === 12, 'fixtures: children table has 12 rows', rows);
  const sorted = await evaluate(`(function () {
    var ths = Array.prototype.slice.call(document.querySelectorAll('#children thead th'));
    var i = ths.findIndex(function (t) { return t.textContent === 'test_loss'; });
    ths[i].click(); ths = document.querySelectorAll('#children thead th'); ths[i].click();
    var v = Array.prototype.map.call(document.querySelectorAll('#children tbody tr'), function (tr) { return parseFloat(tr.children[i].textContent); })
      .filter(function (x) { return !isNaN(x); });
    for (var k = 1; k < v.length; k++) if (v[k] > v[k - 1]) return 'not descending: ' + v.join(',');
    return v.length; })()`);
  ok(sorted === 11, 'fixtures: clicking a header sorts the children table (descending on the second click)', sorted);
  const fp = await evaluate(`document.querySelector('#fit').textContent`);
  ok(/alpha/.test(fp) && /0\.42/.test(fp), 'fixtures: fit parameters shown with intervals', fp.slice(0, 200));
  noProblems('fixtures: sweep page: no console errors');
  await screenshot('fixture-sweep.png');

  await visit(base + '/sweeps.html');
  const sl = await waitUntil(`document.querySelectorAll('#sweeps tbody tr').length`, 5000);
  ok(sl === 1, 'fixtures: sweeps list shows the sweep', sl);
  noProblems('fixtures: sweeps list: no console errors');
}

(async () => {
  let browser = null, fake = null;
  try {
    {
      browser = await launch();
      cdp = browser.cdp;
      await cdp.send('Page.enable'); await cdp.send('Runtime.enable'); await cdp.send('Log.enable');
      await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
      watchConsole();
      ok(true, 'headless chromium started');
      if (args.base && args.job) {
        try { await checkDaemon(String(args.base).replace(/\/$/, ''), args.job); } catch (e) { ok(false, 'daemon checks ran to the end', e.message); }
      }
      if (args.base && args.sweep) {
        try { await checkSweep(String(args.base).replace(/\/$/, ''), args.sweep); } catch (e) { ok(false, 'sweep checks ran to the end', e.message); }
      }
      if (args.base && args.compare) {
        try { await checkCompare(String(args.base).replace(/\/$/, ''), String(args.compare).split(','), String(args.seeds || '').split(',').filter(Boolean)); } catch (e) { ok(false, 'compare checks ran to the end', e.message); }
      }
      if (args.base && args.hyperopt) {
        try { await checkHyperopt(String(args.base).replace(/\/$/, ''), args.hyperopt); } catch (e) { ok(false, 'hyperopt checks ran to the end', e.message); }
      }
      if (args['time-compare']) {
        try { await timeCompare(String(args['time-compare']), args.runs || 20); } catch (e) { ok(false, 'compare timing ran to the end', e.message); }
      }
      if (args.fixtures) {
        fake = await require('./fake_api.js').start(path.resolve(String(args.fixtures)), 0);
        try { await checkFixtures('http://127.0.0.1:' + fake.address().port); } catch (e) { ok(false, 'fixture checks ran to the end', e.message); }
      }
    }
  } catch (e) {
    ok(false, 'browser session', e.message);
  } finally {
    if (browser) await browser.cleanup(cdp);
    if (cdp) cdp.close();
    if (fake) fake.close();
  }
  console.log('# check.js: ' + passed + ' ok, ' + failed + ' not ok');
  process.exit(failed ? 1 : 0);
})();
