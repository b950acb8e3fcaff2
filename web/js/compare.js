/* compare.js: the comparison page. Several runs on shared charts: every shared metric key is one
 * chart with one line per run (or per seed group: the mean with a min-max or standard-error
 * band), a legend that names each run by the params that differ between the selected runs,
 * their summaries side by side, EMA smoothing, a step / wall-time / relative-time x-axis.
 * The URL holds the whole view (runs, keys, log axes, smoothing, x-axis, grouping, zoom), so a
 * copied address reopens the same view. Data: one GET /api/v1/metrics?jobs=... request with
 * max_points, so a long run costs what the chart shows. */
(function () {
  'use strict';
  var TD = window.TD;
  /* points per run and key: 1000 for a few runs, fewer for many (each bucket still keeps its
   * min and max, and a chart is about 1000 px wide), at least 300 */
  var MAX_POINTS = 1000;
  function maxPoints() { return Math.max(300, Math.min(MAX_POINTS, Math.round(8000 / Math.max(1, st.ids.length)))); }
  var DEFAULT_KEYS = ['train_loss', 'test_loss', 'test_acc', 'train_acc', 'sharpness', 'loss',
    'analysis_loss', 'grad_norm', 'lr'];
  var GRID = 400; /* points of the common grid a seed group is averaged on */

  var st = { ids: [], keys: null, logy: {}, logx: false, smooth: 0, x: 'step', group: false,
    band: 'minmax', zoom: {} };
  var jobs = [], shared = [], allKeys = [], data = null, charts = [];
  var t0 = 0; /* performance.now() counts from the navigation start */
  /* time marks of the first load (ms since the navigation started), for bench/compare.sh */
  window.TD_COMPARE_MARKS = {};
  function mark(name) { if (window.TD_COMPARE_MARKS[name] == null) window.TD_COMPARE_MARKS[name] = Math.round(performance.now() - t0); }

  /* ---- the URL is the state ---- */
  function readURL() {
    var q = new URLSearchParams(location.search);
    st.ids = (q.get('jobs') || '').split(',').map(function (s) { return s.trim(); })
      .filter(function (s) { return /^[1-9][0-9]*$/.test(s); })
      .filter(function (s, i, a) { return a.indexOf(s) === i; });
    st.keys = q.has('keys') ? q.get('keys').split(',').filter(Boolean) : null;
    st.logy = {};
    (q.get('logy') || '').split(',').filter(Boolean).forEach(function (k) { st.logy[k] = 1; });
    st.logx = q.get('logx') === '1';
    var sm = parseFloat(q.get('smooth'));
    st.smooth = isFinite(sm) && sm >= 0 && sm < 1 ? sm : 0;
    st.x = ['step', 'time', 'rel'].indexOf(q.get('x')) >= 0 ? q.get('x') : 'step';
    st.group = q.get('group') === 'seed';
    st.band = q.get('band') === 'se' ? 'se' : 'minmax';
    st.zoom = {};
    (q.get('zoom') || '').split(',').filter(Boolean).forEach(function (z) {
      var p = z.split(':');
      if (p.length < 3) return;
      var hi = parseFloat(p.pop()), lo = parseFloat(p.pop());
      if (isFinite(lo) && isFinite(hi) && hi > lo) st.zoom[p.join(':')] = [lo, hi];
    });
  }
  function writeURL() {
    var q = new URLSearchParams();
    q.set('jobs', st.ids.join(','));
    if (st.keys) q.set('keys', st.keys.join(','));
    var ly = Object.keys(st.logy).filter(function (k) { return st.logy[k]; });
    if (ly.length) q.set('logy', ly.join(','));
    if (st.logx) q.set('logx', '1');
    if (st.smooth > 0) q.set('smooth', String(st.smooth));
    if (st.x !== 'step') q.set('x', st.x);
    if (st.group) q.set('group', 'seed');
    if (st.band !== 'minmax') q.set('band', st.band);
    var z = Object.keys(st.zoom).map(function (k) { return k + ':' + st.zoom[k][0] + ':' + st.zoom[k][1]; });
    if (z.length) q.set('zoom', z.join(','));
    history.replaceState(null, '', 'compare.html?' + q.toString().replace(/%2C/g, ',').replace(/%3A/g, ':'));
    TD.$('#share').value = location.href;
  }

  /* ---- params: flatten, and find the ones that differ ---- */
  function flatten(v, pre, out) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      Object.keys(v).forEach(function (k) { flatten(v[k], pre ? pre + '.' + k : k, out); });
    } else out[pre] = JSON.stringify(v);
    return out;
  }
  function differing(flats, skip) {
    var keys = {};
    flats.forEach(function (f) { Object.keys(f).forEach(function (k) { keys[k] = 1; }); });
    return Object.keys(keys).filter(function (k) {
      if (skip && skip[k]) return false;
      for (var i = 1; i < flats.length; i++) if (flats[i][k] !== flats[0][k]) return true;
      return false;
    }).sort();
  }
  function showVal(s) { return s === undefined ? '∅' : s.replace(/^"(.*)"$/, '$1'); }

  /* ---- smoothing: TensorBoard's debiased EMA ---- */
  /* ema(ys, w): last = w * last + (1 - w) * y over the finite values, divided by 1 - w^n (n the
   * finite values so far), so the start is not pulled towards 0; a non-finite value passes
   * through unchanged (TensorBoard, tensorboard/components/vz_line_chart2/line-chart.ts). */
  TD.ema = function (ys, w) {
    var out = new Array(ys.length), last = 0, n = 0;
    for (var i = 0; i < ys.length; i++) {
      var y = ys[i];
      if (typeof y !== 'number' || !isFinite(y)) { out[i] = y; continue; }
      last = last * w + (1 - w) * y;
      n++;
      out[i] = w === 0 ? y : last / (1 - Math.pow(w, n));
    }
    return out;
  };

  /* x values of a series in the current x mode (null where unknown) */
  function xsOf(s) {
    if (st.x === 'step') return s.step;
    var t = s.time || [];
    if (st.x === 'time') return t.map(function (v) { return v == null ? null : v; });
    var first = null;
    for (var i = 0; i < t.length && first == null; i++) if (t[i] != null) first = t[i];
    return t.map(function (v) { return v == null || first == null ? null : v - first; });
  }
  function ysOf(s) { return s.value.map(TD.num); }

  /* linear interpolation of (xs, ys) at x (xs ascending), NaN outside or next to a gap */
  function interp(xs, ys, x) {
    var lo = 0, hi = xs.length - 1;
    if (hi < 0 || x < xs[0] || x > xs[hi]) return NaN;
    while (hi - lo > 1) { var m = (lo + hi) >> 1; if (xs[m] <= x) lo = m; else hi = m; }
    if (xs[lo] === x) return ys[lo];
    if (xs[hi] === x) return ys[hi];
    var a = ys[lo], b = ys[hi];
    if (!isFinite(a) || !isFinite(b)) return NaN;
    return a + (b - a) * (x - xs[lo]) / (xs[hi] - xs[lo]);
  }

  /* ---- groups of runs that differ only by seed ---- */
  function groups(flats) {
    var map = new Map(), out = [];
    jobs.forEach(function (j, i) {
      var f = Object.assign({}, flats[i]);
      delete f.seed;
      var sig = j.kind + '|' + JSON.stringify(Object.keys(f).sort().map(function (k) { return [k, f[k]]; }));
      if (!map.has(sig)) { map.set(sig, out.length); out.push({ members: [], flat: f }); }
      out[map.get(sig)].members.push(i);
    });
    return out;
  }

  function colorOf(i) { return TD.PALETTE[i % TD.PALETTE.length]; }
  function faint(c) { return c + '40'; }

  /* series of one key: per run, or per seed group with a band */
  function seriesFor(key, labels, grp) {
    var out = [], bands = [];
    function runXY(i) {
      var part = data.jobs[String(jobs[i].id)];
      var s = part && part.metrics && part.metrics[key];
      if (!s) return null;
      var xs = xsOf(s), ys = ysOf(s), X = [], Y = [];
      for (var k = 0; k < xs.length; k++) if (xs[k] != null) { X.push(xs[k]); Y.push(ys[k]); }
      return { x: X, y: Y, total: s.total };
    }
    if (!grp) {
      jobs.forEach(function (j, i) {
        var r = runXY(i);
        if (!r) return;
        var c = colorOf(i);
        if (st.smooth > 0) {
          out.push({ label: labels[i] + ' (raw)', x: r.x, y: r.y, color: faint(c), width: 1, points: false, aux: true });
          out.push({ label: labels[i], x: r.x, y: TD.ema(r.y, st.smooth), color: c, width: 2 });
        } else out.push({ label: labels[i], x: r.x, y: r.y, color: c });
      });
      return { series: out, bands: bands };
    }
    grp.forEach(function (g, gi) {
      var runs = g.members.map(runXY).filter(Boolean).map(function (r) {
        return st.smooth > 0 ? { x: r.x, y: TD.ema(r.y, st.smooth) } : r;
      });
      if (!runs.length) return;
      var c = colorOf(gi);
      if (runs.length === 1) { out.push({ label: g.label, x: runs[0].x, y: runs[0].y, color: c }); return; }
      /* the common range of the members, on an even grid */
      var lo = -Infinity, hi = Infinity;
      runs.forEach(function (r) { if (r.x.length) { lo = Math.max(lo, r.x[0]); hi = Math.min(hi, r.x[r.x.length - 1]); } });
      if (!(hi >= lo)) return;
      var n = hi > lo ? GRID : 1, X = [], M = [], L = [], H = [];
      for (var k = 0; k < n; k++) {
        var x = n === 1 ? lo : lo + (hi - lo) * k / (n - 1);
        if (st.x === 'step') x = Math.round(x);
        if (X.length && X[X.length - 1] === x) continue;
        var vals = runs.map(function (r) { return interp(r.x, r.y, x); }).filter(isFinite);
        X.push(x);
        if (!vals.length) { M.push(null); L.push(null); H.push(null); continue; }
        var mean = vals.reduce(function (a, b) { return a + b; }, 0) / vals.length;
        M.push(mean);
        if (st.band === 'se') {
          var v = vals.length > 1 ? vals.reduce(function (a, b) { return a + (b - mean) * (b - mean); }, 0) / (vals.length - 1) : 0;
          var se = Math.sqrt(v / vals.length);
          L.push(mean - se); H.push(mean + se);
        } else { L.push(Math.min.apply(null, vals)); H.push(Math.max.apply(null, vals)); }
      }
      var bandName = st.band === 'se' ? '± 1 s.e.' : 'min-max';
      var hiIdx = out.length;
      out.push({ label: g.label + ' ' + bandName + ' high', x: X, y: H, color: faint(c), width: 1, points: false, aux: true });
      out.push({ label: g.label + ' ' + bandName + ' low', x: X, y: L, color: faint(c), width: 1, points: false, aux: true });
      out.push({ label: g.label + ' mean of ' + runs.length, x: X, y: M, color: c, width: 2, points: false });
      bands.push([hiIdx, hiIdx + 1, faint(c)]);
    });
    return { series: out, bands: bands };
  }

  function xLabel() { return st.x === 'step' ? 'step' : st.x === 'time' ? 'wall time' : 'seconds since start'; }

  function drawCharts() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var host = TD.clear(TD.$('#charts'));
    var flats = jobs.map(function (j) { return flatten(j.params || {}, '', {}); });
    var diff = differing(flats);
    var labels = jobs.map(function (j, i) {
      var d = diff.map(function (k) { return k + '=' + showVal(flats[i][k]); }).join(', ');
      return '#' + j.id + (d ? ' ' + d : j.name ? ' ' + j.name : '');
    });
    var grp = null;
    if (st.group) {
      grp = groups(flats);
      var gdiff = differing(grp.map(function (g) { return g.flat; }));
      grp.forEach(function (g) {
        g.label = (gdiff.map(function (k) { return k + '=' + showVal(g.flat[k]); }).join(', ') || 'all') +
          ' (' + g.members.length + ' seed' + (g.members.length === 1 ? '' : 's') + ')';
      });
    }
    var keys = st.keys || [];
    keys.forEach(function (key) {
      var sr = seriesFor(key, labels, grp);
      var c = TD.chart(host, {
        title: key, xLabel: xLabel(), logY: !!st.logy[key], logX: st.logx, logXToggle: true,
        timeX: st.x === 'time', id: 'cmp-' + key.replace(/[^A-Za-z0-9_-]/g, '_'),
        tools: [downloadBtn('PNG', key, 'png'), downloadBtn('CSV', key, 'csv')],
        onLog: function (on) { if (on) st.logy[key] = 1; else delete st.logy[key]; writeURL(); },
        onLogX: function (on) { st.logx = on; writeURL(); drawCharts(); },
        onZoom: function (lo, hi) { if (lo == null) delete st.zoom[key]; else st.zoom[key] = [+lo.toPrecision(8), +hi.toPrecision(8)]; writeURL(); },
      });
      c.key = key;
      c.csv = sr.series;
      if (st.zoom[key]) c.zoomTo(st.zoom[key][0], st.zoom[key][1]);
      var totals = jobs.map(function (j) {
        var p = data.jobs[String(j.id)], s = p && p.metrics[key];
        return s ? s.total : 0;
      });
      var maxTotal = Math.max.apply(null, totals.concat([0]));
      c.set(sr.series, { bands: sr.bands,
        note: maxTotal > maxPoints() ? 'up to ' + maxTotal + ' points per run, drawn from ' + maxPoints() + ' (each bucket’s min and max kept)' : '' });
      charts.push(c);
    });
    TD.$('#no-charts').hidden = keys.length > 0;
    window.TD_COMPARE_DRAWN = performance.now() - t0;
    mark('drawn');
  }

  /* ---- PNG / CSV of one chart ---- */
  function downloadBtn(text, key, kind) {
    var b = TD.el('button', { type: 'button', class: 'secondary small-btn', 'aria-label': 'download ' + key + ' as ' + text }, text);
    b.addEventListener('click', function () {
      var c = charts.filter(function (x) { return x.key === key; })[0];
      if (!c) return;
      var a = document.createElement('a');
      a.download = key + '.' + kind;
      if (kind === 'png') {
        var cv = c.card.querySelector('canvas');
        if (!cv) return;
        a.href = cv.toDataURL('image/png');
      } else {
        var lines = ['series,x,y'];
        c.csv.forEach(function (s) {
          for (var i = 0; i < s.x.length; i++) lines.push('"' + s.label.replace(/"/g, '""') + '",' + s.x[i] + ',' + (s.y[i] == null ? '' : s.y[i]));
        });
        a.href = URL.createObjectURL(new Blob([lines.join('\n') + '\n'], { type: 'text/csv' }));
      }
      document.body.appendChild(a);
      a.click();
      a.remove();
    });
    return b;
  }

  /* ---- the tables: differing params and summaries, side by side ---- */
  function drawTables() {
    var flats = jobs.map(function (j) { return flatten(j.params || {}, '', {}); });
    var diff = differing(flats);
    var head = TD.el('tr', {}, TD.el('th', {}, ''));
    jobs.forEach(function (j, i) {
      head.appendChild(TD.el('th', { scope: 'col' },
        TD.el('span', { class: 'swatch', style: 'background:' + colorOf(i) }),
        TD.el('a', { href: 'job.html?id=' + j.id }, '#' + j.id), ' ', TD.statusBadge(j.status)));
    });
    var tb = TD.el('tbody');
    function addRow(name, cells, cls) {
      var tr = TD.el('tr', { class: cls || '' }, TD.el('th', { scope: 'row' }, name));
      cells.forEach(function (c) { tr.appendChild(TD.el('td', { class: 'num' }, c)); });
      tb.appendChild(tr);
    }
    addRow('name', jobs.map(function (j) { return j.name || ''; }));
    addRow('kind', jobs.map(function (j) { return j.kind || ''; }));
    diff.forEach(function (k) { addRow(k, flats.map(function (f) { return showVal(f[k]); }), 'param'); });
    var skeys = {};
    jobs.forEach(function (j) { if (j.summary && typeof j.summary === 'object') Object.keys(j.summary).forEach(function (k) { skeys[k] = 1; }); });
    Object.keys(skeys).sort().forEach(function (k) {
      addRow('summary.' + k, jobs.map(function (j) {
        var v = j.summary ? j.summary[k] : undefined;
        var n = TD.num(v);
        return v === undefined ? '' : n != null ? TD.fmt(n, 5) : typeof v === 'object' ? JSON.stringify(v).slice(0, 60) : String(v);
      }), 'summary');
    });
    var t = TD.clear(TD.$('#table'));
    t.appendChild(TD.el('thead', {}, head));
    t.appendChild(tb);
    TD.$('#same-params').textContent = diff.length ? diff.length + ' param(s) differ: ' + diff.join(', ')
      : 'the selected runs have the same params';
  }

  /* ---- controls ---- */
  function drawKeyPicker() {
    var host = TD.clear(TD.$('#keys'));
    shared.forEach(function (k) {
      var cb = TD.el('input', { type: 'checkbox', value: k });
      cb.checked = (st.keys || []).indexOf(k) >= 0;
      cb.addEventListener('change', function () {
        var sel = TD.$$('#keys input').filter(function (x) { return x.checked; }).map(function (x) { return x.value; });
        st.keys = sel;
        writeURL();
        loadData();
      });
      host.appendChild(TD.el('label', { class: 'toggle key' }, cb, ' ' + k));
    });
    var only = allKeys.length - shared.length;
    TD.$('#keys-note').textContent = shared.length + ' key(s) shared by every run' + (only > 0 ? '; ' + only + ' more only in some' : '');
  }
  function bindControls() {
    var sm = TD.$('#smooth'), smv = TD.$('#smooth-val');
    sm.value = String(st.smooth);
    smv.textContent = st.smooth.toFixed(2);
    sm.addEventListener('input', function () { smv.textContent = (+sm.value).toFixed(2); });
    sm.addEventListener('change', function () { st.smooth = +sm.value; writeURL(); drawCharts(); });
    var xs = TD.$('#xaxis');
    xs.value = st.x;
    xs.addEventListener('change', function () { st.x = xs.value; st.zoom = {}; writeURL(); drawCharts(); });
    var gr = TD.$('#group');
    gr.checked = st.group;
    gr.addEventListener('change', function () { st.group = gr.checked; writeURL(); drawCharts(); });
    var bd = TD.$('#band');
    bd.value = st.band;
    bd.addEventListener('change', function () { st.band = bd.value; writeURL(); drawCharts(); });
    TD.$('#copy').addEventListener('click', function () {
      var f = TD.$('#share');
      f.select();
      try { navigator.clipboard.writeText(f.value); } catch (e) { document.execCommand('copy'); }
    });
  }

  function dataURL(keys) {
    return '/api/v1/metrics?jobs=' + st.ids.join(',') + '&keys=' + keys.map(encodeURIComponent).join(',') +
      '&max_points=' + maxPoints() + '&time=1';
  }
  var early = null; /* {url, promise}: the data asked for at start when the URL names the keys */
  function loadData() {
    var keys = st.keys || [];
    if (!keys.length) { data = { jobs: {} }; drawCharts(); return Promise.resolve(); }
    var q = dataURL(keys);
    var p = early && early.url === q ? early.promise : TD.api(q);
    early = null;
    return p.then(function (d) { mark('data'); data = d; drawCharts(); })
      .catch(function (e) { TD.showError('could not load metrics', e); });
  }

  function start() {
    readURL();
    if (!st.ids.length) {
      TD.$('#intro').hidden = false;
      return;
    }
    bindControls();
    /* the runs, their keys and (when the URL names them) the series are asked for at once */
    var keysReq = TD.api('/api/v1/metrics?jobs=' + st.ids.join(',') + '&max_points=2');
    if (st.keys && st.keys.length) { var u = dataURL(st.keys); early = { url: u, promise: TD.api(u) }; early.promise.catch(function () {}); }
    Promise.all(st.ids.map(function (id) { return TD.api('/api/v1/jobs/' + id); })).then(function (js) {
      jobs = js;
      mark('jobs');
      document.title = 'compare ' + st.ids.length + ' runs · tdlab';
      TD.$('#title').textContent = 'Comparing ' + jobs.length + ' run' + (jobs.length === 1 ? '' : 's');
      drawTables();
      /* the keys of each run: a 2-point read is cheap (first and last point, count from the pyramid) */
      return keysReq;
    }).then(function (d) {
      mark('keys');
      var sets = jobs.map(function (j) { var p = d.jobs[String(j.id)]; return p ? Object.keys(p.metrics) : []; });
      var all = {};
      sets.forEach(function (s) { s.forEach(function (k) { all[k] = 1; }); });
      allKeys = Object.keys(all).sort();
      shared = allKeys.filter(function (k) { return sets.every(function (s) { return s.indexOf(k) >= 0; }); });
      if (!st.keys) {
        var pref = DEFAULT_KEYS.filter(function (k) { return shared.indexOf(k) >= 0; });
        st.keys = (pref.length ? pref : shared).slice(0, 6);
      } else st.keys = st.keys.filter(function (k) { return allKeys.indexOf(k) >= 0; });
      drawKeyPicker();
      writeURL();
      return loadData();
    }).catch(function (e) { TD.showError('could not load the runs', e); });
  }
  document.addEventListener('DOMContentLoaded', start);
})();
