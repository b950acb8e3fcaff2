/* job.js: the job page (job.html?id=N): header with status and progress, error, summary,
 * live metric charts (grouped by key), artifacts (spectral densities, quadrature nodes and
 * eigenvalue lists drawn as plots) and the full params. Polls every 2 s while the job is
 * queued or running, asking for at most MAX_POINTS points per key. */
(function () {
  'use strict';
  var TD = window.TD;
  var MAX_POINTS = 1000;
  var POLL_MS = 2000;
  var ART_JSON_LIMIT = 8 * 1048576;

  var state = { id: null, job: null, charts: {}, artSig: null, paramsSig: null, timer: null,
    wasActive: false, finalDone: false, busy: false };

  /* ---------- metrics ---------- */

  /* adaptMetrics(raw) -> {key: {x: [steps], y: [numbers or null], bad: count non-finite}}.
   * Accepts {"metrics": {key: {"step": [], "value": []}}} (DESIGN.md) and a few variants. */
  function adaptMetrics(raw) {
    var m = raw && typeof raw === 'object' && raw.metrics && typeof raw.metrics === 'object' ? raw.metrics : raw;
    var out = {};
    if (!m || typeof m !== 'object' || Array.isArray(m)) return out;
    Object.keys(m).forEach(function (k) {
      var s = m[k], xs = [], vs = [];
      if (Array.isArray(s)) {
        s.forEach(function (p) {
          if (Array.isArray(p)) { xs.push(p[0]); vs.push(p[1]); }
          else if (p && typeof p === 'object') { xs.push(p.step); vs.push(p.value); }
        });
      } else if (s && typeof s === 'object') {
        xs = s.step || s.steps || s.x || [];
        vs = s.value || s.values || s.y || [];
      } else return;
      if (!Array.isArray(xs) || !Array.isArray(vs)) return;
      var n = Math.min(xs.length, vs.length), x = new Array(n), y = new Array(n), bad = 0;
      for (var i = 0; i < n; i++) {
        x[i] = TD.num(xs[i]);
        y[i] = TD.num(vs[i]);
        if (y[i] === null && TD.isNonFinite(vs[i])) bad++;
      }
      out[k] = { x: x, y: y, bad: bad };
    });
    return out;
  }

  var LOSS_RE = /^([a-z0-9]+_)*loss(_theory|_ema|_avg|_mean|_smooth|_full)?$/i;
  var ACC_RE = /(^|_)acc(uracy)?(_ema)?$/i;
  var SHARP_RE = /^sharpness/i;
  var REF_RE = /^(2|two)_?(over_?|\/)lr$|(^|_)two_over_lr$|^2lr$|stability_threshold|(^|_)threshold$|^eos_threshold$/i;

  /* groupKeys(keys) -> [{id, title, keys: [...], refs: {key: true}}]. Loss-like keys share a
   * chart, accuracy keys share one, sharpness shares one with its 2/lr-style reference lines,
   * and every other key is grouped with keys sharing its stem (the key minus its last
   * _ / . segment, or a key that is itself a prefix: "hessian_trace" and "hessian_trace_se",
   * "weight_norm/0" and "weight_norm/1"). */
  function groupKeys(keys) {
    keys = keys.slice().sort();
    var used = {}, groups = [];
    function take(id, title, pred) {
      var ks = keys.filter(function (k) { return !used[k] && pred(k); });
      if (!ks.length) return null;
      ks.forEach(function (k) { used[k] = true; });
      var g = { id: id, title: title, keys: ks, refs: {} };
      groups.push(g);
      return g;
    }
    take('loss', 'Loss', function (k) { return LOSS_RE.test(k); });
    take('accuracy', 'Accuracy', function (k) { return ACC_RE.test(k); });
    if (keys.some(function (k) { return SHARP_RE.test(k); })) {
      var g = take('sharpness', 'Sharpness', function (k) { return SHARP_RE.test(k) || REF_RE.test(k); });
      g.keys.forEach(function (k) { if (REF_RE.test(k)) g.refs[k] = true; });
      g.keys.sort(function (a, b) { return (g.refs[a] ? 1 : 0) - (g.refs[b] ? 1 : 0) || (a < b ? -1 : 1); });
    }
    // a key whose stem is already in a named group joins it: loss_bias, loss_variance -> Loss
    var owner = {};
    groups.forEach(function (g) { g.keys.forEach(function (k) { owner[k] = g; }); });
    keys.forEach(function (k) {
      if (used[k]) return;
      var st = stems(k);
      for (var i = st.length - 1; i >= 0; i--) {
        if (owner[st[i]]) { owner[st[i]].keys.push(k); used[k] = true; break; }
      }
    });
    var rest = keys.filter(function (k) { return !used[k]; });
    var parent = {};
    rest.forEach(function (k) { parent[k] = k; });
    function find(k) { while (parent[k] !== k) { parent[k] = parent[parent[k]]; k = parent[k]; } return k; }
    function union(a, b) { a = find(a); b = find(b); if (a !== b) parent[a < b ? b : a] = a < b ? a : b; }
    function stems(k) {
      var out = [], re = /[_\/.]/g, m;
      while ((m = re.exec(k)) !== null) if (m.index > 0) out.push(k.slice(0, m.index));
      return out;
    }
    var byStem = {};
    rest.forEach(function (k) {
      var st = stems(k);
      st.forEach(function (s) { if (parent[s] !== undefined) union(k, s); });
      if (st.length) {
        var s1 = st[st.length - 1];
        if (byStem[s1]) union(k, byStem[s1]); else byStem[s1] = k;
      }
    });
    var comp = {}, order = [];
    rest.forEach(function (k) {
      var r = find(k);
      if (!comp[r]) { comp[r] = []; order.push(r); }
      comp[r].push(k);
    });
    order.forEach(function (r) {
      var ks = comp[r];
      var title = ks.length === 1 ? ks[0] : commonPrefix(ks).replace(/[_\/.]+$/, '') || ks.join(', ');
      groups.push({ id: 'm-' + title, title: title, keys: ks, refs: {} });
    });
    return groups;
  }
  function commonPrefix(ks) {
    var p = ks[0];
    ks.forEach(function (k) { while (k.indexOf(p) !== 0) p = p.slice(0, -1); });
    return p;
  }

  /* log-y preference of a chart: the user's saved choice, else log when every value is
   * (but a few) positive and they span more than three decades (a diverging loss, say). */
  function logPref(id, series) {
    var v = null;
    try { v = localStorage.getItem('tdlab_logy_' + id); } catch (e) { /* no storage */ }
    if (v === '1' || v === '0') return v === '1';
    var lo = Infinity, hi = -Infinity, n = 0, npos = 0;
    series.forEach(function (s) {
      s.y.forEach(function (y) {
        if (y == null) return;
        n++;
        if (y > 0) { npos++; if (y < lo) lo = y; if (y > hi) hi = y; }
      });
    });
    return n > 0 && npos >= 0.95 * n && hi / lo > 1e3;
  }

  function renderMetrics(metrics) {
    var host = TD.$('#charts');
    var keys = Object.keys(metrics);
    var groups = groupKeys(keys);
    var seen = {};
    var badKeys = [];
    keys.forEach(function (k) { if (metrics[k].bad) badKeys.push(k + ' (' + metrics[k].bad + ')'); });
    var nf = TD.$('#nonfinite');
    if (badKeys.length) {
      nf.hidden = false;
      nf.textContent = '⚠ non-finite values present (NaN or ±Infinity, drawn as gaps): ' + badKeys.join(', ');
    } else nf.hidden = true;
    TD.$('#charts-empty').hidden = keys.length > 0;

    groups.forEach(function (g) {
      seen[g.id] = true;
      var c = state.charts[g.id];
      if (!c) {
        c = TD.chart(host, { title: g.title, logY: logPref(g.id, g.keys.map(function (k) { return metrics[k]; })),
          id: 'chart-' + g.id.replace(/[^a-z0-9_-]/gi, '_') });
        var cb = TD.$('input.logy', c.card);
        if (cb) cb.addEventListener('change', function () {
          try { localStorage.setItem('tdlab_logy_' + g.id, cb.checked ? '1' : '0'); } catch (e) { /* ignore */ }
        });
        state.charts[g.id] = c;
      }
      var bad = 0;
      var series = g.keys.map(function (k) {
        bad += metrics[k].bad;
        var s = { label: k, x: metrics[k].x, y: metrics[k].y };
        if (g.refs[k]) { s.dash = [6, 4]; s.color = '#6b7280'; s.width = 1.5; }
        return s;
      });
      c.set(series, { note: bad ? bad + ' non-finite value(s) shown as gaps' : '' });
    });
    Object.keys(state.charts).forEach(function (id) {
      if (!seen[id]) { state.charts[id].destroy(); delete state.charts[id]; }
    });
    // keep the DOM order equal to the group order
    groups.forEach(function (g) { host.appendChild(state.charts[g.id].card); });
  }

  /* ---------- job header, summary, params ---------- */

  function renderJob(job) {
    var title = job.name ? job.name : (job.kind || 'job') + ' #' + job.id;
    document.title = title + ' · tdlab';
    TD.$('#job-title').textContent = title;
    var meta = TD.clear(TD.$('#job-meta'));
    TD.append(meta, [TD.statusBadge(job.status), ' ',
      TD.el('span', { class: 'kind' }, job.kind || ''), ' ',
      TD.el('span', { class: 'muted' }, '#' + job.id)]);
    if (Array.isArray(job.tags)) job.tags.forEach(function (t) { meta.appendChild(TD.el('span', { class: 'tag' }, String(t))); });
    var sw = TD.sweepOf(job);
    if (sw != null) meta.appendChild(TD.el('a', { href: 'sweep.html?id=' + encodeURIComponent(sw), class: 'tag link' }, 'sweep ' + sw));

    TD.clear(TD.$('#job-progress')).appendChild(TD.progressBar(job.progress, job.status));

    var times = TD.clear(TD.$('#job-times'));
    var rows = [['created', job.created_at], ['started', job.started_at], ['finished', job.finished_at]];
    rows.forEach(function (r) {
      if (!r[1]) return;
      times.appendChild(TD.el('span', { title: r[1] }, r[0] + ' ' + TD.ago(r[1])));
    });
    if (job.started_at) times.appendChild(TD.el('span', {}, 'ran ' + TD.duration(job.started_at, job.finished_at)));
    if (job.attempt != null && job.attempt > 1) times.appendChild(TD.el('span', {}, 'attempt ' + job.attempt));

    var cancel = TD.$('#cancel');
    cancel.hidden = !TD.ACTIVE[job.status];

    var err = TD.$('#job-error');
    var emsg = job.error;
    if (emsg && typeof emsg === 'object') emsg = emsg.message || JSON.stringify(emsg);
    err.hidden = !emsg;
    err.textContent = emsg ? String(emsg) : '';

    var sum = TD.clear(TD.$('#summary'));
    var s = job.summary;
    if (s && typeof s === 'object' && Object.keys(s).length) {
      var tb = TD.el('tbody');
      Object.keys(s).forEach(function (k) {
        var v = s[k];
        var cell = (v && typeof v === 'object') ? TD.jsonPre(v) : TD.fmt(TD.isNonFinite(v) ? v : (TD.num(v) != null ? TD.num(v) : v), 6);
        tb.appendChild(TD.el('tr', {}, TD.el('th', {}, k), TD.el('td', { class: 'num' }, cell)));
      });
      sum.appendChild(TD.el('table', { class: 'kv' }, tb));
    } else {
      sum.appendChild(TD.el('p', { class: 'muted' }, TD.ACTIVE[job.status] ? 'available when the job finishes' : 'no summary'));
    }

    var psig = JSON.stringify(job.params);
    if (psig !== state.paramsSig) {
      state.paramsSig = psig;
      TD.clear(TD.$('#params')).appendChild(TD.jsonPre(job.params === undefined ? null : job.params));
    }
    TD.$('#csv').href = '/api/v1/jobs/' + encodeURIComponent(job.id) + '/metrics.csv';
  }

  /* ---------- artifacts ---------- */

  function adaptArtifacts(raw) {
    return TD.listOf(raw, ['artifacts', 'items', 'data']).map(function (a) {
      if (typeof a === 'string') return { name: a };
      if (!a || typeof a !== 'object') return null;
      return { name: a.name, type: a.content_type || a.type || a.mime || '', size: a.size != null ? a.size : a.bytes,
        created_at: a.created_at || a.updated_at };
    }).filter(function (a) { return a && a.name != null; });
  }
  function artUrl(name) {
    return '/api/v1/jobs/' + encodeURIComponent(state.id) + '/artifacts/' + encodeURIComponent(name);
  }
  function looksJson(a) {
    if (/json/i.test(a.type)) return true;
    if (/\.json$/i.test(a.name)) return true;
    return !a.type && !/\.(safetensors|bin|npy|npz|pt|gz|png|csv)$/i.test(a.name);
  }
  function numArray(v) {
    return Array.isArray(v) && v.length > 0 && v.every(function (x) { return typeof x === 'number' || TD.isNonFinite(x) || x === null; });
  }
  function flat(v) { return Array.isArray(v) && v.some(Array.isArray) ? [].concat.apply([], v.map(function (r) { return Array.isArray(r) ? r : [r]; })) : v; }

  /* Find plottable shapes inside an artifact: densities {grid, density}, quadrature
   * {nodes, weights} (possibly one row per probe), eigenvalue lists, and {x, y} curves. */
  function findShapes(obj, label, out, depth) {
    if (depth > 4 || obj == null || typeof obj !== 'object') return out;
    if (Array.isArray(obj)) {
      if (obj.length && obj.every(function (e) { return e && typeof e === 'object' && !Array.isArray(e); })) {
        var last = obj[obj.length - 1];
        var sub = label + (obj.length > 1 ? ' (last of ' + obj.length + (last.step != null ? ', step ' + last.step : '') + ')' : '');
        findShapes(last, sub, out, depth + 1);
      }
      return out;
    }
    var grid = obj.grid || obj.x_grid || obj.lambdas;
    if (numArray(grid) && numArray(obj.density)) out.push({ type: 'density', label: label, x: grid, y: obj.density });
    var nodes = flat(obj.nodes), weights = flat(obj.weights);
    if (numArray(nodes) && numArray(weights) && nodes.length === weights.length) out.push({ type: 'quadrature', label: label, x: nodes, y: weights });
    Object.keys(obj).forEach(function (k) {
      var v = obj[k];
      if (/eigen|top_?k|^top$|_top$/i.test(k) && numArray(v)) out.push({ type: 'eigen', label: label + (k === 'eigenvalues' ? '' : ' · ' + k), values: v, mode: obj.mode || obj.which });
    });
    if (numArray(obj.x) && numArray(obj.y) && obj.x.length === obj.y.length) out.push({ type: 'curve', label: label, x: obj.x, y: obj.y });
    Object.keys(obj).forEach(function (k) {
      var v = obj[k];
      if (v && typeof v === 'object' && !numArray(v)) findShapes(v, label + ' · ' + k, out, depth + 1);
    });
    return out;
  }

  function renderShape(host, sh, idx) {
    var toNum = function (a) { return a.map(TD.num); };
    if (sh.type === 'density' || sh.type === 'curve') {
      TD.chart(host, { title: sh.label + (sh.type === 'density' ? ' — spectral density' : ''), xLabel: sh.type === 'density' ? 'eigenvalue' : 'x',
        logY: sh.type === 'density', id: 'art-' + idx })
        .set([{ label: sh.type === 'density' ? 'density' : 'y', x: toNum(sh.x), y: toNum(sh.y) }]);
    } else if (sh.type === 'quadrature') {
      // merge equal nodes (several probes may share one) and draw the weights as points
      var m = new Map();
      toNum(sh.x).forEach(function (x, i) { var w = TD.num(sh.y[i]); if (x != null && w != null) m.set(x, (m.get(x) || 0) + w); });
      var xs = Array.from(m.keys());
      TD.chart(host, { title: sh.label + ' — quadrature nodes and weights', xLabel: 'eigenvalue', logY: true, id: 'art-' + idx })
        .set([{ label: 'weight', x: xs, y: xs.map(function (x) { return m.get(x); }), style: 'points' }]);
    } else if (sh.type === 'eigen') {
      var vals = toNum(sh.values);
      var ks = vals.map(function (_, i) { return i + 1; });
      var card = TD.chart(host, { title: sh.label + ' — top ' + vals.length + ' eigenvalues' + (sh.mode ? ' (' + sh.mode + ')' : ''),
        xLabel: 'index', logToggle: true, id: 'art-' + idx, height: 200 });
      card.set([{ label: 'eigenvalue', x: ks, y: vals, style: 'bars' }]);
      var tb = TD.el('tbody');
      vals.forEach(function (v, i) { tb.appendChild(TD.el('tr', {}, TD.el('td', {}, String(i + 1)), TD.el('td', { class: 'num' }, v == null ? String(sh.values[i]) : TD.fmt(v, 8)))); });
      card.card.appendChild(TD.el('details', { class: 'eig-table' }, TD.el('summary', {}, 'table'),
        TD.el('table', { class: 'data' }, TD.el('thead', {}, TD.el('tr', {}, TD.el('th', {}, '#'), TD.el('th', {}, 'eigenvalue'))), tb)));
    }
  }

  function renderArtifacts(list) {
    var sig = JSON.stringify(list);
    if (sig === state.artSig) return;
    state.artSig = sig;
    var box = TD.clear(TD.$('#artifacts'));
    var plots = TD.clear(TD.$('#artifact-plots'));
    TD.charts.slice().forEach(function (c) { if (c.opts.id && /^art-/.test(c.opts.id)) c.destroy(); });
    if (!list.length) { box.appendChild(TD.el('p', { class: 'muted' }, 'no artifacts')); return; }
    var tb = TD.el('tbody');
    list.forEach(function (a) {
      tb.appendChild(TD.el('tr', {},
        TD.el('td', {}, TD.el('a', { href: artUrl(a.name), target: '_blank', rel: 'noopener' }, a.name)),
        TD.el('td', { class: 'muted' }, a.type || ''),
        TD.el('td', { class: 'num' }, TD.fmtBytes(a.size))));
    });
    box.appendChild(TD.el('table', { class: 'data' },
      TD.el('thead', {}, TD.el('tr', {}, TD.el('th', {}, 'name'), TD.el('th', {}, 'type'), TD.el('th', { class: 'num' }, 'size'))), tb));
    var n = 0;
    list.filter(looksJson).slice(0, 12).forEach(function (a) {
      if (typeof a.size === 'number' && a.size > ART_JSON_LIMIT) return;
      var slot = TD.el('div', { class: 'art-slot' });
      plots.appendChild(slot);
      TD.api(artUrl(a.name)).then(function (obj) {
        var shapes = findShapes(obj, a.name, [], 0);
        shapes.slice(0, 6).forEach(function (sh) { renderShape(slot, sh, n++); });
      }).catch(function (e) {
        slot.appendChild(TD.el('p', { class: 'muted' }, a.name + ': ' + e.message));
      });
    });
  }

  /* ---------- polling ---------- */

  function refresh() {
    if (state.busy) return;
    state.busy = true;
    clearTimeout(state.timer);
    var id = encodeURIComponent(state.id);
    var jobP = TD.api('/api/v1/jobs/' + id).then(function (job) {
      state.job = job;
      renderJob(job);
      TD.$('#content').hidden = false;
      TD.$('#loading').hidden = true;
      return job;
    });
    var metP = TD.api('/api/v1/jobs/' + id + '/metrics?max_points=' + MAX_POINTS).then(function (raw) {
      renderMetrics(adaptMetrics(raw));
    });
    var artP = TD.api('/api/v1/jobs/' + id + '/artifacts').then(function (raw) {
      renderArtifacts(adaptArtifacts(raw));
    });
    Promise.all([
      jobP.catch(function (e) {
        if (e.status === 404) { TD.$('#loading').textContent = 'No job with id ' + state.id + '.'; state.gone = true; }
        throw e;
      }),
      metP, artP.catch(function (e) { if (e.status !== 404) throw e; })
    ]).then(function () {
      TD.hideError();
      TD.$('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    }).catch(function (e) {
      if (!state.gone) TD.showError('refresh failed', e);
    }).then(function () {
      state.busy = false;
      var job = state.job;
      if (state.gone) return;
      var active = !job || TD.ACTIVE[job.status];
      if (active) { state.wasActive = true; state.timer = setTimeout(refresh, POLL_MS); }
      else if (state.wasActive && !state.finalDone) {
        // one more pass after the job ends: the last metric batch may land just after
        state.finalDone = true;
        state.timer = setTimeout(refresh, 1000);
      }
      TD.$('#live').hidden = !active;
    });
  }

  function init() {
    state.id = TD.qs('id');
    if (!state.id) { TD.$('#loading').textContent = 'No job id given: open job.html?id=N'; return; }
    TD.$('#cancel').addEventListener('click', function () {
      var btn = TD.$('#cancel');
      btn.disabled = true;
      TD.api('/api/v1/jobs/' + encodeURIComponent(state.id) + '/cancel', { method: 'POST', body: {} })
        .then(function () { refresh(); })
        .catch(function (e) { TD.showError('cancel', e); })
        .then(function () { btn.disabled = false; });
    });
    TD.$('#refresh').addEventListener('click', function () { state.finalDone = false; refresh(); });
    refresh();
  }

  TD.job = { adaptMetrics: adaptMetrics, groupKeys: groupKeys, findShapes: findShapes };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
