/* job.js: the job page (job.html?id=N): header with status and progress, error, summary,
 * live metric charts (grouped by key), artifacts (spectral densities, quadrature nodes and
 * eigenvalue lists drawn as plots) and the full params. A fork shows its parent (and can draw
 * the parent's metrics up to the fork step on its charts), a parent lists its forks, and a
 * job with checkpoint_step<S>.safetensors artifacts offers a Fork form (step, lr, batch size). Polls every 2 s while the job is
 * queued or running, asking for at most MAX_POINTS points per key. */
(function () {
  'use strict';
  var TD = window.TD;
  var MAX_POINTS = 1000;
  var POLL_MS = 2000;
  var ART_JSON_LIMIT = 8 * 1048576;

  var state = { id: null, job: null, charts: {}, artSig: null, paramsSig: null, timer: null,
    wasActive: false, finalDone: false, busy: false, metrics: null, parentMetrics: null,
    ckptSteps: [], forkSig: null };
  var PARENT_COLOR = '#9ca3af';

  /* ---------- metrics ---------- */

  /* adaptMetrics(raw) -> {key: {x: [steps], y: [numbers or null], bad: count non-finite}}.
   * Accepts {"metrics": {key: {"step": [], "value": []}}} (DESIGN.md) and a few variants. */
  /* mergeMetrics(old, fresh): the columnar answer `fresh` (a since_step read) appended to `old`
   * (points at steps a key already has are skipped); old null: fresh alone. Adds .since (the
   * next since_step: the smallest last step over the keys, + 1) and .small (every key has all
   * its points, fewer than MAX_POINTS / 2, so appending stays exact). */
  function mergeMetrics(old, fresh) {
    var m = old ? old.metrics : {};
    var f = fresh && fresh.metrics && typeof fresh.metrics === 'object' ? fresh.metrics : {};
    Object.keys(f).forEach(function (k) {
      var s = f[k];
      if (!s || !Array.isArray(s.step)) return;
      if (!old || !m[k]) { m[k] = { step: s.step.slice(), value: s.value.slice(), total: s.total }; return; }
      var t = m[k], last = t.step.length ? t.step[t.step.length - 1] : -Infinity, added = 0;
      for (var i = 0; i < s.step.length; i++) if (s.step[i] > last) { t.step.push(s.step[i]); t.value.push(s.value[i]); added++; }
      t.total = t.step.length;
    });
    var since = Infinity, small = true;
    Object.keys(m).forEach(function (k) {
      var t = m[k];
      if (t.step.length) since = Math.min(since, t.step[t.step.length - 1] + 1);
      if (t.total == null || t.total !== t.step.length || t.step.length > MAX_POINTS / 2) small = false;
    });
    return { metrics: m, since: isFinite(since) ? since : 0, small: small && isFinite(since) };
  }

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
  var SHARP_RE = /^sharpness(_ema|_la|_lm|_top)?$/i;
  /* diagnostics on their own scale (Lanczos residuals, ratios, iteration counts): never
   * pulled into a named chart, never grouped */
  var DIAG_RE = /(_resid(ual)?s?|_ratio|_steps|_iters?|_count|_n_?matvec|_converged)$/i;
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
      if (used[k] || DIAG_RE.test(k)) return;
      var st = stems(k);
      for (var i = st.length - 1; i >= 0; i--) {
        if (owner[st[i]]) { owner[st[i]].keys.push(k); used[k] = true; break; }
      }
    });
    var diag = keys.filter(function (k) { return !used[k] && DIAG_RE.test(k); });
    diag.forEach(function (k) { used[k] = true; });
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
    diag.forEach(function (k) { groups.push({ id: 'm-' + k, title: k, keys: [k], refs: {} }); });
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

  /* A key `<base>_undefined` flags the steps where <base> was undefined (train: b_simple, a
   * ratio of two EMAs, is not logged while either EMA is <= 0, which happens early in
   * training). Flags are not data: they are counted into a note on <base>'s chart. */
  var FLAG_RE = /^(.+)_undefined$/;
  var KEY_NOTES = {
    b_simple: 'ratio of two EMAs (McCandlish et al. 2018, finite-population corrected); ' +
      'negative or undefined early in training: such steps are flagged, not drawn'
  };

  function renderMetrics(metrics) {
    var host = TD.$('#charts');
    var flags = {};
    var keys = Object.keys(metrics).filter(function (k) {
      var m = FLAG_RE.exec(k);
      if (!m || !metrics[m[1]]) return true; /* no base series at all: show the flags */
      flags[m[1]] = metrics[k].x.length;
      return false;
    });
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

    /* the first screen shows what matters for the kind; per-layer charts (keys with a /,
     * e.g. weight_norm/0) go into a fold that starts closed */
    var first = KIND_FIRST[state.job && state.job.kind] || ['loss', 'accuracy', 'sharpness'];
    groups.sort(function (a, b) {
      var ia = first.indexOf(a.id), ib = first.indexOf(b.id);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
    });
    var layerHost = TD.$('#layer-charts');
    if (!layerHost) {
      layerHost = TD.el('div', { class: 'charts', id: 'layer-charts' });
      var fold = TD.el('details', { id: 'layer-fold', class: 'layer-fold' },
        TD.el('summary', {}, 'per-layer metrics'), layerHost);
      fold.addEventListener('toggle', function () { TD.charts.forEach(function (c) { c.resize(); }); });
      host.parentNode.insertBefore(fold, host.nextSibling);
    }
    var isLayer = function (g) { return g.keys.every(function (k) { return /\//.test(k); }); };
    var nLayer = groups.filter(isLayer).length;
    TD.$('#layer-fold').hidden = nLayer === 0;
    TD.$('#layer-fold summary').textContent = 'per-layer metrics (' + nLayer + ' chart' + (nLayer === 1 ? '' : 's') + ')';

    groups.forEach(function (g) {
      seen[g.id] = true;
      var c = state.charts[g.id];
      if (!c) {
        c = TD.chart(isLayer(g) ? layerHost : host, { title: g.title, logY: logPref(g.id, g.keys.map(function (k) { return metrics[k]; })),
          id: 'chart-' + g.id.replace(/[^a-z0-9_-]/gi, '_'), logXToggle: true });
        var cb = TD.$('input.logy', c.card);
        if (cb) cb.addEventListener('change', function () {
          try { localStorage.setItem('tdlab_logy_' + g.id, cb.checked ? '1' : '0'); } catch (e) { /* ignore */ }
        });
        state.charts[g.id] = c;
      }
      var bad = 0, nref = 0;
      var series = g.keys.map(function (k) {
        bad += metrics[k].bad;
        var s = { label: k, x: metrics[k].x, y: metrics[k].y };
        if (g.refs[k]) { s.dash = nref ? [2, 3] : [6, 4]; s.color = nref ? '#b45309' : '#6b7280'; s.width = 1.5; nref++; }
        return s;
      });
      /* the curvature kind logs no 2/lr line (eos does): drawn here from its lr (the lr
       * metric when there is one, else params.optimizer.lr) */
      if (g.id === 'sharpness' && !nref) {
        var two = twoOverLr(metrics);
        if (two) series.push(two);
      }
      parentSeries(g.keys).forEach(function (s) { series.push(s); });
      var notes = bad ? [bad + ' non-finite value(s) shown as gaps'] : [];
      g.keys.forEach(function (k) {
        if (flags[k]) notes.push(k + ' undefined at ' + flags[k] + ' step(s), not drawn');
        if (KEY_NOTES[k]) notes.push(k + ': ' + KEY_NOTES[k]);
      });
      c.set(series, { note: notes.join('; ') });
    });
    Object.keys(state.charts).forEach(function (id) {
      if (!seen[id]) { state.charts[id].destroy(); delete state.charts[id]; }
    });
    // keep the DOM order equal to the group order
    groups.forEach(function (g) { (isLayer(g) ? layerHost : host).appendChild(state.charts[g.id].card); });
  }

  var KIND_FIRST = { train: ['loss', 'accuracy'], eos: ['sharpness', 'loss'], curvature: ['sharpness', 'loss'],
    taylor: ['loss'], natgrad_invariance: ['loss'] };

  function twoOverLr(metrics) {
    var lr = metrics.lr, xs = [], ys = [];
    if (lr && lr.x.length) {
      for (var i = 0; i < lr.x.length; i++) if (lr.y[i] > 0) { xs.push(lr.x[i]); ys.push(2 / lr.y[i]); }
    } else {
      var p = state.job && state.job.params, v = p && (p.optimizer && p.optimizer.lr != null ? p.optimizer.lr : p.lr);
      var sh = metrics.sharpness;
      if (!(v > 0) || !sh || !sh.x.length) return null;
      xs = [sh.x[0], sh.x[sh.x.length - 1]];
      ys = [2 / v, 2 / v];
    }
    return xs.length ? { label: '2/lr', x: xs, y: ys, dash: [6, 4], color: '#6b7280', width: 1.5, points: false } : null;
  }

  /* The parent's points of `keys` up to the fork step (steps continue from it), drawn dashed
   * in grey when "draw the parent before the fork" is on. */
  function parentSeries(keys) {
    var pm = state.parentMetrics, par = state.job && state.job.parent;
    if (!pm || !par) return [];
    var out = [];
    keys.forEach(function (k) {
      var m = pm[k];
      if (!m) return;
      var x = [], y = [];
      for (var i = 0; i < m.x.length; i++) if (m.x[i] != null && m.x[i] <= par.step) { x.push(m.x[i]); y.push(m.y[i]); }
      if (x.length) out.push({ label: 'parent #' + par.job + ' ' + k, x: x, y: y, dash: [5, 4], color: PARENT_COLOR, width: 1.5 });
    });
    return out;
  }

  function loadParentMetrics() {
    var par = state.job && state.job.parent;
    if (!par || !TD.$('#parent-overlay').checked) { state.parentMetrics = null; return Promise.resolve(); }
    return TD.api('/api/v1/jobs/' + encodeURIComponent(par.job) + '/metrics?max_points=' + MAX_POINTS)
      .then(function (raw) { state.parentMetrics = adaptMetrics(raw); });
  }

  /* ---------- parent, children, fork ---------- */

  function renderLinks(job) {
    var box = TD.clear(TD.$('#job-links'));
    var par = job.parent && typeof job.parent === 'object' ? job.parent : null;
    var kids = Array.isArray(job.children) ? job.children : [];
    box.hidden = !par && !kids.length;
    if (par) {
      TD.append(box, ['forked from ', TD.el('a', { href: 'job.html?id=' + encodeURIComponent(par.job), class: 'parent-link' }, 'job #' + par.job),
        ' at step ' + par.step]);
    }
    if (kids.length) {
      if (par) box.appendChild(document.createTextNode(' · '));
      box.appendChild(document.createTextNode('forks: '));
      kids.forEach(function (c, i) {
        if (i) box.appendChild(document.createTextNode(', '));
        box.appendChild(TD.el('a', { href: 'job.html?id=' + encodeURIComponent(c), class: 'child-link' }, '#' + c));
      });
    }
    TD.$('#parent-overlay-label').hidden = !par;
  }

  /* The steps S of the artifacts checkpoint_step<S>.safetensors, ascending. */
  function checkpointSteps(list) {
    var steps = [];
    list.forEach(function (a) {
      var m = /^checkpoint_step(\d+)\.safetensors$/.exec(a.name);
      if (m) steps.push(Number(m[1]));
    });
    return steps.sort(function (a, b) { return a - b; });
  }

  function renderFork() {
    var job = state.job, steps = state.ckptSteps;
    var card = TD.$('#fork-card');
    card.hidden = !job || !steps.length;
    if (card.hidden) return;
    var sig = JSON.stringify([job.id, steps]);
    if (sig === state.forkSig) return;
    state.forkSig = sig;
    var sel = TD.clear(TD.$('#fork-step'));
    steps.forEach(function (st) { sel.appendChild(TD.el('option', { value: String(st) }, String(st))); });
    sel.value = String(steps[steps.length - 1]);
    var p = job.params || {};
    var lr = TD.$('#fork-lr'), bs = TD.$('#fork-batch');
    if (!lr.value && p.optimizer && p.optimizer.lr != null) lr.value = String(p.optimizer.lr);
    if (!bs.value && p.batch_size != null) bs.value = String(p.batch_size);
    bs.disabled = p.batch_size == null;
  }

  /* POST a fork: the job's params with fork {job, step} and the edited lr and batch size. */
  function submitFork(ev) {
    ev.preventDefault();
    var job = state.job;
    if (!job) return;
    var params = JSON.parse(JSON.stringify(job.params || {}));
    delete params.init_from;
    var step = Number(TD.$('#fork-step').value);
    params.fork = { job: job.id, step: step };
    var lr = TD.$('#fork-lr').value, bs = TD.$('#fork-batch').value;
    if (lr !== '') { params.optimizer = params.optimizer || {}; params.optimizer.lr = Number(lr); }
    if (bs !== '' && params.batch_size != null) params.batch_size = Number(bs);
    var body = { kind: job.kind, params: params,
      name: ((job.name || job.kind + ' #' + job.id) + ' fork@' + step).slice(0, 200) };
    if (Array.isArray(job.tags) && job.tags.length) body.tags = job.tags.filter(function (t) { return !/^sweep:/.test(t); });
    var msg = TD.$('#fork-msg'), btn = TD.$('#fork-submit');
    btn.disabled = true;
    msg.textContent = '';
    TD.api('/api/v1/jobs', { method: 'POST', body: body }).then(function (child) {
      msg.textContent = 'created job #' + child.id;
      window.location.href = 'job.html?id=' + encodeURIComponent(child.id);
    }).catch(function (e) {
      var err = e.body && e.body.error;
      msg.textContent = err ? (err.field ? err.field + ': ' : '') + err.message : e.message;
      msg.className = 'small error-text';
    }).then(function () { btn.disabled = false; });
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
    if (job.executor && job.executor !== 'local') times.appendChild(TD.el('span', { title: 'where it runs (README "Remote runs")' }, 'executor ' + job.executor + (job.executor_ref ? ' ' + job.executor_ref : '') + (job.heartbeat_at ? ', last heartbeat ' + TD.ago(job.heartbeat_at) : '')));

    renderLinks(job);
    if (TD.kernels) TD.kernels.render(job); /* kernels.js: chapter-6 views */

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
  function numMatrix(v) { return Array.isArray(v) && v.length > 0 && v.every(numArray); }
  function flat(v) { return numMatrix(v) ? [].concat.apply([], v) : v; }

  /* Find plottable shapes inside an artifact (up to 4 levels deep; in a list of snapshot
   * objects, the last one):
   *  density    {grid, density}                 spectral density on a grid
   *  quadrature {nodes, weights}                SLQ nodes and weights, one row per probe allowed
   *  eigen      a numeric list under a key like eigenvalues / top_k
   *  stat       {estimate, std_err}             e.g. a Hutchinson trace estimate
   *  steps      {steps: [..], key: [[..], ..]}  one row per step (top-k eigenvalues over training)
   *  curve      {x, y} */
  function findShapes(obj, label, out, depth, atStep) {
    if (depth > 4 || obj == null || typeof obj !== 'object') return out;
    if (Array.isArray(obj)) {
      if (obj.length && obj.every(function (e) { return e && typeof e === 'object' && !Array.isArray(e); })) {
        var last = obj[obj.length - 1];
        var sub = label + (obj.length > 1 ? ' (last of ' + obj.length + (last.step != null ? ', step ' + last.step : '') + ')' : '');
        findShapes(last, sub, out, depth + 1, atStep);
      }
      return out;
    }
    var step = typeof obj.step === 'number' ? obj.step : atStep;
    var grid = obj.grid || obj.x_grid || obj.lambdas;
    if (numArray(grid) && numArray(obj.density) && grid.length === obj.density.length) out.push({ type: 'density', label: label, x: grid, y: obj.density, step: step });
    var nodes = flat(obj.nodes), weights = flat(obj.weights);
    if (numArray(nodes) && numArray(weights) && nodes.length === weights.length) out.push({ type: 'quadrature', label: label, x: nodes, y: weights, step: step });
    var steps = numArray(obj.steps) ? obj.steps : null;
    Object.keys(obj).forEach(function (k) {
      var v = obj[k];
      if (steps && numMatrix(v) && v.length === steps.length) out.push({ type: 'steps', label: label, key: k, steps: steps, rows: v });
      else if (/eigen|top_?k|^top$|_top$/i.test(k) && numArray(v) && !(steps && v.length === steps.length)) {
        out.push({ type: 'eigen', label: label, key: k, values: v, mode: obj.which || obj.mode, step: step });
      }
    });
    var est = obj.estimate != null ? obj.estimate : obj.value;
    if (typeof est === 'number' && (obj.std_err != null || obj.stderr != null)) out.push({ type: 'stat', label: label, value: est, se: obj.std_err != null ? obj.std_err : obj.stderr, n: obj.n_probes });
    if (numArray(obj.x) && numArray(obj.y) && obj.x.length === obj.y.length) out.push({ type: 'curve', label: label, x: obj.x, y: obj.y });
    Object.keys(obj).forEach(function (k) {
      var v = obj[k];
      if (v && typeof v === 'object' && !numArray(v) && !numMatrix(v)) findShapes(v, label ? label + ' · ' + k : k, out, depth + 1, step);
    });
    return out;
  }

  var artSeq = 0;
  /* Draw the shapes of one artifact into `host` (a .charts grid). */
  function renderShapes(host, shapes, name) {
    var toNum = function (a) { return a.map(TD.num); };
    var id = function () { return 'art-' + (artSeq++); };
    var title = function (sh, what) { return (sh.label ? name + ' · ' + sh.label : name) + ' — ' + what; };
    var eig = [], stats = [];
    shapes.forEach(function (sh) {
      if (sh.type === 'density' || sh.type === 'curve') {
        TD.chart(host, { title: title(sh, sh.type === 'density' ? 'spectral density' : 'curve'), xLabel: sh.type === 'density' ? 'eigenvalue' : 'x',
          logY: sh.type === 'density', id: id() })
          .set([{ label: sh.type === 'density' ? 'density' : 'y', x: toNum(sh.x), y: toNum(sh.y) }]);
      } else if (sh.type === 'quadrature') {
        // merge equal nodes (several probes may share one) and draw the weights as points
        var m = new Map();
        toNum(sh.x).forEach(function (x, i) { var w = TD.num(sh.y[i]); if (x != null && w != null) m.set(x, (m.get(x) || 0) + w); });
        var xs = Array.from(m.keys());
        TD.chart(host, { title: title(sh, 'quadrature nodes and weights'), xLabel: 'eigenvalue', logY: true, id: id() })
          .set([{ label: 'weight', x: xs, y: xs.map(function (x) { return m.get(x); }), style: 'points' }]);
      } else if (sh.type === 'steps') {
        var k = Math.max.apply(null, sh.rows.map(function (r) { return r.length; }));
        var series = [];
        for (var j = 0; j < k; j++) {
          series.push({ label: 'λ' + (j + 1), x: toNum(sh.steps), y: sh.rows.map(function (r) { return TD.num(r[j]); }) });
        }
        TD.chart(host, { title: title(sh, sh.key + ' over steps'), id: id() }).set(series);
        var lastRow = sh.rows[sh.rows.length - 1];
        eig.push({ label: sh.key, key: sh.key, values: lastRow, step: sh.steps[sh.steps.length - 1] });
      } else if (sh.type === 'eigen') {
        eig.push(sh);
      } else if (sh.type === 'stat') {
        stats.push(sh);
      }
    });
    // the longest eigenvalue list as a bar chart, every list and estimate in one table
    var longest = eig.filter(function (e) { return e.values.length >= 2; }).sort(function (a, b) { return b.values.length - a.values.length; })[0];
    var card = null;
    if (longest) {
      var vals = toNum(longest.values);
      card = TD.chart(host, { title: name + (longest.label && longest.label !== longest.key ? ' · ' + longest.label : '') + ' — top ' + vals.length + ' eigenvalues' +
        (longest.mode ? ' (' + longest.mode + ')' : '') + (longest.step != null ? ' at step ' + longest.step : ''),
      xLabel: 'index', id: id(), height: 200, intX: true });
      card.set([{ label: 'eigenvalue', x: vals.map(function (_, i) { return i + 1; }), y: vals, style: 'bars' }]);
    }
    if (eig.length || stats.length) {
      var tb = TD.el('tbody');
      eig.forEach(function (e) {
        tb.appendChild(TD.el('tr', {}, TD.el('th', {}, (e.label || e.key) + (e.mode ? ' (' + e.mode + ')' : '')),
          TD.el('td', { class: 'num' }, e.values.map(function (v) { return TD.num(v) == null ? String(v) : TD.fmt(TD.num(v), 6); }).join(', '))));
      });
      stats.forEach(function (st) {
        tb.appendChild(TD.el('tr', {}, TD.el('th', {}, st.label || 'estimate'),
          TD.el('td', { class: 'num' }, TD.fmt(st.value, 6) + ' ± ' + TD.fmt(st.se, 3) + (st.n ? '  (' + st.n + ' probes)' : ''))));
      });
      var table = TD.el('table', { class: 'kv eig-values' }, tb);
      if (card) card.card.appendChild(TD.el('details', { class: 'eig-table', open: eig.length + stats.length <= 4 ? true : null },
        TD.el('summary', {}, 'values'), table));
      else host.appendChild(TD.el('div', { class: 'card chart-card' }, TD.el('div', { class: 'chart-head' }, TD.el('h3', {}, name + ' — eigenvalues')), table));
    }
  }

  /* name_step12.json and name.json are one family: one card with a step selector. */
  function artFamilies(list) {
    var fams = [], byKey = {};
    list.forEach(function (a) {
      var m = /^(.*?)[_.-]?step[_-]?(\d+)(\.[a-z0-9]+)?$/i.exec(a.name);
      var key = m ? m[1] + (m[3] || '') : a.name;
      var f = byKey[key];
      if (!f) { f = byKey[key] = { key: key, members: [] }; fams.push(f); }
      f.members.push({ art: a, step: m ? Number(m[2]) : null });
    });
    fams.forEach(function (f) {
      f.members.sort(function (a, b) {
        if (a.step === null) return -1;
        if (b.step === null) return 1;
        return b.step - a.step;
      });
    });
    return fams;
  }

  function showMember(fam, member, host) {
    TD.charts.slice().forEach(function (c) { if (host.contains(c.card)) c.destroy(); });
    TD.clear(host);
    var a = member.art;
    if (typeof a.size === 'number' && a.size > ART_JSON_LIMIT) {
      host.appendChild(TD.el('p', { class: 'muted' }, a.name + ' is too large to plot here (' + TD.fmtBytes(a.size) + ')'));
      return;
    }
    TD.api(artUrl(a.name)).then(function (obj) {
      if (!host.isConnected) return;
      if (TD.ch8 && TD.ch8.render(a.name, obj, host)) return; /* chapter 8 artifacts: ch8.js */
      var shapes = findShapes(obj, '', [], 0).slice(0, 12);
      if (!shapes.length) { host.appendChild(TD.el('p', { class: 'muted small' }, a.name + ': nothing to plot')); return; }
      renderShapes(host, shapes, a.name);
    }).catch(function (e) {
      host.appendChild(TD.el('p', { class: 'muted' }, a.name + ': ' + e.message));
    });
  }

  function renderArtifacts(list) {
    var sig = JSON.stringify(list.map(function (a) { return [a.name, a.size, a.created_at]; }));
    if (sig === state.artSig) return;
    state.artSig = sig;
    var box = TD.clear(TD.$('#artifacts'));
    var plots = TD.$('#artifact-plots');
    TD.charts.slice().forEach(function (c) { if (plots.contains(c.card)) c.destroy(); });
    TD.clear(plots);
    if (!list.length) { box.appendChild(TD.el('p', { class: 'muted' }, 'no artifacts')); return; }
    var fams = artFamilies(list);
    var tb = TD.el('tbody');
    fams.forEach(function (f) {
      var first = f.members[0].art;
      var nameCell = TD.el('td', {}, TD.el('a', { href: artUrl(first.name), target: '_blank', rel: 'noopener' }, first.name));
      if (f.members.length > 1) {
        var more = TD.el('details', { class: 'small' }, TD.el('summary', {}, (f.members.length - 1) + ' more'));
        f.members.slice(1).forEach(function (m) {
          more.appendChild(TD.el('a', { href: artUrl(m.art.name), target: '_blank', rel: 'noopener', class: 'art-more' }, m.art.name));
        });
        nameCell.appendChild(more);
      }
      tb.appendChild(TD.el('tr', {}, nameCell, TD.el('td', { class: 'muted' }, first.type || ''),
        TD.el('td', { class: 'num' }, TD.fmtBytes(first.size))));
    });
    box.appendChild(TD.el('table', { class: 'data' },
      TD.el('thead', {}, TD.el('tr', {}, TD.el('th', {}, 'name'), TD.el('th', {}, 'type'), TD.el('th', { class: 'num' }, 'size'))), tb));

    fams.filter(function (f) { return looksJson(f.members[0].art); }).slice(0, 8).forEach(function (f) {
      var host = TD.el('div', { class: 'charts' });
      var head = TD.el('div', { class: 'art-head' }, TD.el('h3', {}, f.key));
      if (f.members.length > 1) {
        var sel = TD.el('select', { class: 'art-step', 'aria-label': 'step' });
        f.members.forEach(function (m, i) {
          sel.appendChild(TD.el('option', { value: String(i) }, m.step === null ? 'final (' + m.art.name + ')' : 'step ' + m.step));
        });
        sel.addEventListener('change', function () { showMember(f, f.members[Number(sel.value)], host); });
        head.appendChild(TD.el('label', { class: 'small muted' }, 'show ', sel));
      }
      plots.appendChild(TD.el('div', { class: 'art-group', 'data-family': f.key }, head, host));
      showMember(f, f.members[0], host);
    });
    /* influence jobs: the images of the top helpful/harmful examples (web/js/influence.js) */
    list.filter(function (a) { return a.name === 'influence.json'; }).slice(0, 1).forEach(function (a) {
      if (TD.influence) TD.api(artUrl(a.name)).then(function (d) { if (plots.isConnected) TD.influence.render(plots, d); }).catch(function () {});
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
    /* live updates fetch only the new points (since_step) while every series is still shorter
     * than MAX_POINTS; past that a downsampled read (which costs what it returns) replaces all */
    var inc = state.rawMetrics && state.rawMetrics.small && state.job && TD.ACTIVE[state.job.status];
    var murl = '/api/v1/jobs/' + id + '/metrics?max_points=' + MAX_POINTS + (inc ? '&since_step=' + state.rawMetrics.since : '');
    var metP = Promise.all([TD.api(murl),
      jobP.then(function () { return state.parentMetrics ? null : loadParentMetrics(); }).catch(function () { return null; })])
      .then(function (r) {
        state.rawMetrics = mergeMetrics(inc ? state.rawMetrics : null, r[0]);
        state.metrics = adaptMetrics(state.rawMetrics);
        renderMetrics(state.metrics);
      });
    var artP = TD.api('/api/v1/jobs/' + id + '/artifacts').then(function (raw) {
      var list = adaptArtifacts(raw);
      state.ckptSteps = checkpointSteps(list);
      renderArtifacts(list);
      if (TD.dynamics) jobP.then(function (job) { TD.dynamics.render(job, list.map(function (a) { return a.name; })); });
      return jobP.then(renderFork);
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
    TD.$('#fork-form').addEventListener('submit', submitFork);
    TD.$('#parent-overlay').addEventListener('change', function () {
      loadParentMetrics().then(function () { if (state.metrics) renderMetrics(state.metrics); })
        .catch(function (e) { TD.showError('parent metrics', e); });
    });
    refresh();
  }

  TD.job = { adaptMetrics: adaptMetrics, mergeMetrics: mergeMetrics, groupKeys: groupKeys, findShapes: findShapes,
    checkpointSteps: checkpointSteps, parentSeries: parentSeries };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
