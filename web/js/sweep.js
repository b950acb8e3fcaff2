/* sweep.js: the sweep page (sweep.html?id=N): status counts, the fitted law with its
 * parameters and intervals, a log-log plot of the points with the fitted curve and its band,
 * and a sortable table of the children linking to their jobs. The JSON of a sweep is read
 * only through adaptSweep() (and adaptFit()), so that a change of shape is a change there. */
(function () {
  'use strict';
  var TD = window.TD;
  var POLL_MS = 3000;
  var SUMMARY_PREF = ['test_loss', 'test_acc', 'train_loss', 'loss', 'steps_to_target', 'n_params', 'sharpness'];
  var state = { id: null, sweep: null, sort: { col: null, dir: 1 }, chart: null, timer: null, busy: false };

  /* getPath({a: {b: [1, 2]}}, "a.b[1]") -> 2; undefined when absent. */
  function getPath(obj, path) {
    if (obj == null || path == null) return undefined;
    var parts = String(path).replace(/\[(\d+)\]/g, '.$1').split('.').filter(Boolean);
    var o = obj;
    for (var i = 0; i < parts.length; i++) {
      if (o == null || typeof o !== 'object') return undefined;
      o = o[parts[i]];
    }
    return o;
  }
  function asObject(v, keyName, valName) {
    if (Array.isArray(v)) {
      var o = {};
      v.forEach(function (e) { if (e && typeof e === 'object' && e[keyName] != null) o[e[keyName]] = e[valName]; });
      return o;
    }
    return v && typeof v === 'object' ? v : {};
  }
  function pick() {
    for (var i = 0; i < arguments.length; i++) if (arguments[i] !== undefined && arguments[i] !== null) return arguments[i];
    return undefined;
  }

  /* childValue(child, path): a sweep axis or fit path looked up on a child: the child itself
   * ("summary.n_params"), its axis values ("model.hidden[0]" as a key), or its params. */
  function childValue(c, path) {
    if (!path) return undefined;
    if (c.axes && Object.prototype.hasOwnProperty.call(c.axes, path)) return c.axes[path];
    var v = getPath(c.raw, path);
    if (v === undefined && c.raw && c.raw.params) v = getPath(c.raw.params, path);
    if (v === undefined && /^params\./.test(path) && c.raw) v = getPath(c.raw.params, path.slice(7));
    return v;
  }

  /* adaptFit(f, children) -> {law, x, y, params: [{name, value, lo, hi}], points: [{x, y,
   * id}], curve: {x, y, lo, hi} or null, n, error, extra: {key: scalar}} or null. */
  function adaptFit(f, children) {
    if (!f || typeof f !== 'object') return null;
    var fit = { law: f.law || f.name || f.type || '', x: typeof f.x === 'string' ? f.x : f.x_path,
      y: typeof f.y === 'string' ? f.y : f.y_path, params: [], points: [], curve: null, extra: {} };
    var err = f.error;
    fit.error = err ? (typeof err === 'object' ? err.message || JSON.stringify(err) : String(err)) : null;

    var ps = f.params || f.parameters || {};
    if (Array.isArray(ps)) ps = ps.reduce(function (o, p) { if (p && p.name != null) o[p.name] = p; return o; }, {});
    Object.keys(ps).forEach(function (k) {
      var p = ps[k], val, lo, hi;
      if (typeof p === 'number' || typeof p === 'string') val = TD.num(p);
      else if (p && typeof p === 'object') {
        val = TD.num(pick(p.value, p.estimate, p.mean, p.est));
        var ci = pick(p.ci, p.ci95, p.interval, p.ci_95);
        if (Array.isArray(ci)) { lo = TD.num(ci[0]); hi = TD.num(ci[1]); }
        else { lo = TD.num(pick(p.lo, p.lower, p.low)); hi = TD.num(pick(p.hi, p.upper, p.high)); }
      }
      fit.params.push({ name: k, value: val, lo: lo == null ? null : lo, hi: hi == null ? null : hi });
    });
    /* derived quantities in the same {value, ci95} form (E_min of critical_batch, a, b, G of
     * chinchilla) are listed after the parameters */
    var dv = f.derived && typeof f.derived === 'object' && !Array.isArray(f.derived) ? f.derived : {};
    Object.keys(dv).forEach(function (k) {
      var p = dv[k];
      if (!p || typeof p !== 'object') return;
      var ci = pick(p.ci95, p.ci);
      fit.params.push({ name: k, derived: true, value: TD.num(p.value),
        lo: Array.isArray(ci) ? TD.num(ci[0]) : null, hi: Array.isArray(ci) ? TD.num(ci[1]) : null });
    });

    var law = String(fit.law);
    var pts = f.points || f.data;
    var xKey = 'x', yKey = 'y';
    if (/chinchilla/i.test(law)) { xKey = 'N'; yKey = 'L'; }
    if (/critical/i.test(law)) { xKey = 'B'; yKey = 'S'; }
    if (Array.isArray(pts)) {
      pts.forEach(function (p) {
        if (!p || typeof p !== 'object') return;
        var x = TD.num(pick(p[xKey], p.x)), y = TD.num(pick(p[yKey], p.y));
        fit.points.push({ x: x, y: y, id: pick(p.job_id, p.id) });
      });
    } else if (pts && typeof pts === 'object' && Array.isArray(pts.x) && Array.isArray(pts.y)) {
      pts.x.forEach(function (x, i) { fit.points.push({ x: TD.num(x), y: TD.num(pts.y[i]), id: pts.job_id ? pts.job_id[i] : undefined }); });
    } else if (fit.x && fit.y) {
      children.forEach(function (c) {
        if (c.status && c.status !== 'succeeded') return;
        var x = TD.num(childValue(c, fit.x)), y = TD.num(childValue(c, fit.y));
        if (x != null && y != null) fit.points.push({ x: x, y: y, id: c.id });
      });
    }
    fit.points = fit.points.filter(function (p) { return p.x != null && p.y != null; });

    var cv = f.curve || f.prediction || f.predicted;
    if (Array.isArray(cv)) {
      var o = { x: [], y: [], lo: [], hi: [] };
      cv.forEach(function (p) { if (p) { o.x.push(TD.num(p.x)); o.y.push(TD.num(p.y)); o.lo.push(TD.num(p.lo)); o.hi.push(TD.num(p.hi)); } });
      cv = o;
    }
    if (/chinchilla/i.test(law)) {
      /* the server's chinchilla curve is the loss along the compute-optimal frontier, against
       * compute C: it does not belong on a plot of L against N */
      fit.curve = null;
      fit.curveNote = 'chinchilla: the fitted surface L(N, D) is not drawn against N alone';
    } else if (cv && typeof cv === 'object' && Array.isArray(cv.x) && Array.isArray(cv.y)) {
      var arr = function (a) { return Array.isArray(a) ? a.map(TD.num) : null; };
      fit.curve = { x: arr(cv.x), y: arr(cv.y), lo: arr(pick(cv.lo, cv.lower, cv.y_lo)), hi: arr(pick(cv.hi, cv.upper, cv.y_hi)) };
    } else {
      fit.curve = curveFromLaw(law, fit.params, fit.points);
      if (fit.curve) fit.curveDerived = true;
    }
    fit.n = pick(f.n, f.n_points, f.count, fit.points.length);
    fit.residuals = Array.isArray(f.residuals) ? f.residuals : null;
    Object.keys(f).forEach(function (k) {
      if (['law', 'name', 'type', 'x', 'y', 'params', 'parameters', 'points', 'data', 'curve', 'prediction',
        'predicted', 'residuals', 'error', 'n', 'n_points', 'count', 'derived', 'compute_optimal', 'N', 'D', 'L'].indexOf(k) >= 0) return;
      var v = f[k];
      if (k === 'bootstrap' && v && typeof v === 'object') {
        fit.extra[k] = (v.resamples != null ? v.resamples + ' resamples' : '') + (v.seed != null ? ', seed ' + v.seed : '') +
          (v.failed ? ', ' + v.failed + ' failed' : '');
        return;
      }
      if (v == null || typeof v !== 'object' || Object.keys(v).length <= 8) fit.extra[k] = v;
    });
    return fit;
  }

  /* When the server sends no curve: evaluate the known 1-D laws over the points' x range. */
  function curveFromLaw(law, params, points) {
    var P = {};
    params.forEach(function (p) { P[p.name] = p.value; });
    var f = null;
    if (/power/i.test(law) && P.A != null && P.alpha != null) {
      f = function (x) { return (P.E || 0) + P.A * Math.pow(x, -P.alpha); };
    } else if (/critical/i.test(law)) {
      var smin = pick(P.S_min, P.s_min, P.Smin), bc = pick(P.B_crit, P.b_crit, P.Bcrit);
      if (smin != null && bc != null) f = function (b) { return smin * (1 + bc / b); };
    }
    if (!f || !points.length) return null;
    var xs = points.map(function (p) { return p.x; }).filter(function (x) { return x > 0; });
    if (!xs.length) return null;
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    if (hi <= lo) hi = lo * 2;
    var out = { x: [], y: [], lo: null, hi: null };
    for (var i = 0; i <= 80; i++) {
      var x = lo * Math.pow(hi / lo, i / 80);
      out.x.push(x);
      out.y.push(f(x));
    }
    return out;
  }

  /* adaptSweep(raw) -> {id, name, kind, status, created_at, counts: {status: n}, axes:
   * [paths], children: [{id, name, status, axes: {path: v}, summary: {}, raw}], fit, raw}. */
  function adaptSweep(raw) {
    var s = raw && typeof raw === 'object' ? raw : {};
    if (s.sweep && typeof s.sweep === 'object') s = Object.assign({}, s.sweep, s);
    var kids = TD.listOf(pick(s.children, s.jobs, s.items), ['children', 'jobs', 'items']);
    var children = kids.filter(function (c) { return c && typeof c === 'object'; }).map(function (c) {
      var ax = pick(c.axes, c.axis_values, c.point, c.values, c.assignment);
      ax = asObject(ax, 'path', 'value');
      if (c.seed != null && ax.seed === undefined) ax = Object.assign({}, ax, { seed: c.seed });
      return { id: pick(c.id, c.job_id), name: c.name, status: c.status, axes: ax,
        summary: c.summary && typeof c.summary === 'object' ? c.summary : {}, error: c.error, raw: c };
    });
    var counts = pick(s.counts, s.status_counts, s.statuses);
    counts = asObject(counts, 'status', 'count');
    if (!Object.keys(counts).length) {
      children.forEach(function (c) { var st = c.status || 'unknown'; counts[st] = (counts[st] || 0) + 1; });
    }
    var axes = [];
    if (s.axes && typeof s.axes === 'object' && !Array.isArray(s.axes)) axes = Object.keys(s.axes);
    children.forEach(function (c) { Object.keys(c.axes).forEach(function (k) { if (axes.indexOf(k) < 0) axes.push(k); }); });
    return { id: pick(s.id, state.id), name: s.name, kind: s.kind, status: s.status, mode: s.mode,
      created_at: s.created_at, counts: counts, axes: axes, children: children,
      fit: adaptFit(s.fit, children), raw: s };
  }

  /* ---------- rendering ---------- */

  function renderHead(sw) {
    document.title = (sw.name || 'sweep ' + sw.id) + ' · tdlab';
    TD.$('#sweep-title').textContent = sw.name || 'sweep #' + sw.id;
    var meta = TD.clear(TD.$('#sweep-meta'));
    if (sw.status) meta.appendChild(TD.statusBadge(sw.status));
    if (sw.kind) meta.appendChild(TD.el('span', { class: 'kind' }, sw.kind));
    if (sw.mode) meta.appendChild(TD.el('span', { class: 'tag' }, sw.mode));
    meta.appendChild(TD.el('span', { class: 'muted' }, '#' + sw.id));
    if (sw.created_at) meta.appendChild(TD.el('span', { class: 'muted small', title: sw.created_at }, 'created ' + TD.ago(sw.created_at)));
    var total = 0;
    var counts = TD.clear(TD.$('#counts'));
    Object.keys(sw.counts).forEach(function (k) {
      var n = Number(sw.counts[k]) || 0;
      if (k === 'total') return;
      total += n;
      counts.appendChild(TD.el('span', {}, TD.statusBadge(k), ' ', String(n)));
    });
    counts.appendChild(TD.el('span', { class: 'muted' }, total + ' children'));
    TD.$('#cancel').hidden = !(sw.status === 'running' || sw.status === 'queued' || (sw.counts.running || 0) + (sw.counts.queued || 0) > 0);
  }

  function renderFit(sw) {
    var fit = sw.fit;
    var box = TD.clear(TD.$('#fit'));
    var plotHost = TD.$('#fit-plot');
    if (!fit) {
      box.appendChild(TD.el('p', { class: 'muted' }, 'No fit was requested for this sweep, or it is not ready yet.'));
      if (state.chart) { state.chart.destroy(); state.chart = null; }
      return;
    }
    box.appendChild(TD.el('p', {}, TD.el('strong', {}, fit.law || 'fit'),
      fit.y || fit.x ? TD.el('span', { class: 'muted' }, '  ' + (fit.y || 'y') + ' against ' + (fit.x || 'x')) : '',
      TD.el('span', { class: 'muted' }, '  ·  ' + fit.n + ' points')));
    if (fit.error) box.appendChild(TD.el('div', { class: 'alert warn' }, 'fit: ' + fit.error));
    if (fit.params.length) {
      var tb = TD.el('tbody');
      fit.params.forEach(function (p) {
        tb.appendChild(TD.el('tr', { class: p.derived ? 'derived' : '' }, TD.el('th', { title: p.derived ? 'derived from the parameters' : '' }, p.name + (p.derived ? ' *' : '')),
          TD.el('td', { class: 'num' }, TD.fmt(p.value, 5)),
          TD.el('td', { class: 'num' }, p.lo != null || p.hi != null ? '[' + TD.fmt(p.lo, 4) + ', ' + TD.fmt(p.hi, 4) + ']' : '')));
      });
      box.appendChild(TD.el('table', { class: 'data fit-params' }, TD.el('thead', {}, TD.el('tr', {},
        TD.el('th', {}, 'parameter'), TD.el('th', { class: 'num' }, 'value'), TD.el('th', { class: 'num' }, '95% interval'))), tb));
      if (fit.params.some(function (p) { return p.derived; }))
        box.appendChild(TD.el('p', { class: 'muted small' }, '* derived from the fitted parameters (bootstrap interval)'));
    }
    var ex = Object.keys(fit.extra);
    if (ex.length) {
      var tb2 = TD.el('tbody');
      ex.forEach(function (k) {
        var v = fit.extra[k];
        tb2.appendChild(TD.el('tr', {}, TD.el('th', {}, k), TD.el('td', {}, v && typeof v === 'object' ? TD.jsonPre(v) : TD.fmt(v, 5))));
      });
      box.appendChild(TD.el('table', { class: 'kv spaced' }, tb2));
    }

    if (!state.chart) {
      state.chart = TD.chart(plotHost, { title: (fit.y || 'y') + ' vs ' + (fit.x || 'x'), xLabel: fit.x || 'x',
        logX: true, logY: true, logXToggle: true, height: 340, wide: true, id: 'fit-chart' });
    }
    // several points may share an x (seeds): the k-th point at each x goes to series k
    var byX = new Map();
    fit.points.forEach(function (p) { if (!byX.has(p.x)) byX.set(p.x, []); byX.get(p.x).push(p.y); });
    var mult = 0;
    byX.forEach(function (ys) { mult = Math.max(mult, ys.length); });
    var series = [];
    var bands = [];
    /* honesty: a parameter whose 95% interval spans zero (an exponent that may be 0 or of
     * either sign) or is not finite is not identified by these points; say so next to the
     * plot. The band is clipped to a decade around the points, so a huge interval cannot
     * flatten them against the axis. */
    var unid = fit.params.filter(function (p) {
      if (p.derived || (p.lo == null && p.hi == null)) return false;
      return !(isFinite(p.lo) && isFinite(p.hi)) || (p.lo < 0 && p.hi > 0 && p.value !== 0);
    });
    var notes = fit.curveNote ? [fit.curveNote] : [];
    if (unid.length) box.appendChild(TD.el('div', { id: 'fit-warning', class: 'alert warn', role: 'note' },
      'Not identified by these points: ' + unid.map(function (p) {
        return p.name + ' (95% interval [' + TD.fmt(p.lo, 3) + ', ' + TD.fmt(p.hi, 3) + ']' + (p.lo < 0 && p.hi > 0 ? ' spans 0' : '') + ')';
      }).join(', ') + '. The curve is one of many that fit about as well.'));
    if (fit.curve) {
      series.push({ label: 'fit' + (fit.curveDerived ? ' (from params)' : ''), x: fit.curve.x, y: fit.curve.y, color: '#dc2626', width: 2, points: false });
      if (fit.curve.lo && fit.curve.hi) {
        var pys = fit.points.map(function (p) { return p.y; }).filter(function (y) { return y > 0 && isFinite(y); });
        var ylo = pys.length ? Math.min.apply(null, pys) / 10 : -Infinity, yhi = pys.length ? Math.max.apply(null, pys) * 10 : Infinity;
        var clipped = 0;
        var clip = function (v) {
          if (v == null || !isFinite(v)) return v;
          if (v < ylo) { clipped++; return ylo; }
          if (v > yhi) { clipped++; return yhi; }
          return v;
        };
        series.push({ label: '95% hi', x: fit.curve.x, y: fit.curve.hi.map(clip), color: '#fca5a5', width: 1, dash: [4, 4], points: false });
        series.push({ label: '95% lo', x: fit.curve.x, y: fit.curve.lo.map(clip), color: '#fca5a5', width: 1, dash: [4, 4], points: false });
        bands.push([1, 2, 'rgba(220, 38, 38, 0.12)']);
        if (clipped) notes.push('the 95% band reaches beyond a decade around the points; it is cut there (' + clipped + ' value(s))');
      }
    }
    /* critical_batch: the two regimes of S(B) = S_min (1 + B_crit / B): perfect scaling
     * S = E_min / B below B_crit and S = S_min above it (McCandlish et al. 2018, fig. 4) */
    if (/critical/i.test(String(fit.law)) && fit.curve && fit.curve.x && fit.curve.x.length) {
      var P = {};
      fit.params.forEach(function (p) { P[p.name] = p.value; });
      if (P.S_min > 0 && P.B_crit > 0) {
        var cx = fit.curve.x;
        series.push({ label: 'S_min', x: cx, y: cx.map(function () { return P.S_min; }), color: '#64748b', width: 1, dash: [2, 4], points: false });
        series.push({ label: 'E_min / B', x: cx, y: cx.map(function (b) { return P.S_min * P.B_crit / b; }), color: '#94a3b8', width: 1, dash: [2, 4], points: false });
      }
    }
    for (var k = 0; k < mult; k++) {
      var xs = [], ys = [];
      byX.forEach(function (v, x) { if (v.length > k) { xs.push(x); ys.push(v[k]); } });
      series.push({ label: k === 0 ? 'points' : 'points (' + (k + 1) + ')', x: xs, y: ys, style: 'points', color: '#2563eb' });
    }
    state.chart.set(series, { bands: bands, empty: 'no finished points yet', note: notes.join(' · ') });
  }

  function summaryCols(sw) {
    var seen = {};
    sw.children.forEach(function (c) { Object.keys(c.summary).forEach(function (k) { if (typeof c.summary[k] !== 'object' || c.summary[k] === null) seen[k] = true; }); });
    var cols = [];
    var fy = sw.fit && sw.fit.y ? String(sw.fit.y).replace(/^summary\./, '') : null;
    var fx = sw.fit && sw.fit.x ? String(sw.fit.x).replace(/^summary\./, '') : null;
    [fy, fx].concat(SUMMARY_PREF).forEach(function (k) { if (k && seen[k] && cols.indexOf(k) < 0) cols.push(k); });
    Object.keys(seen).sort().forEach(function (k) { if (cols.length < 7 && cols.indexOf(k) < 0) cols.push(k); });
    return cols;
  }

  function renderChildren(sw) {
    var sumCols = summaryCols(sw);
    var cols = [{ key: 'id', label: 'job', get: function (c) { return c.id; }, num: true },
      { key: 'status', label: 'status', get: function (c) { return c.status; } }];
    sw.axes.forEach(function (a) { cols.push({ key: 'axis:' + a, label: a, get: function (c) { return c.axes[a]; }, num: true, axis: true }); });
    sumCols.forEach(function (k) { cols.push({ key: 'sum:' + k, label: k, get: function (c) { return c.summary[k]; }, num: true }); });
    if (sw.children.some(function (c) { return c.error; }))
      cols.push({ key: 'error', label: 'error', get: function (c) { return c.error || ''; } });

    var rows = sw.children.slice();
    var sc = cols.filter(function (c) { return c.key === state.sort.col; })[0];
    if (sc) {
      var dir = state.sort.dir;
      rows.sort(function (a, b) {
        var va = sc.get(a), vb = sc.get(b);
        var na = TD.num(va), nb = TD.num(vb);
        if (na != null && nb != null) return (na - nb) * dir;
        if (va == null && vb != null) return 1;
        if (vb == null && va != null) return -1;
        var sa = typeof va === 'object' ? JSON.stringify(va) : String(va), sb = typeof vb === 'object' ? JSON.stringify(vb) : String(vb);
        return sa < sb ? -dir : sa > sb ? dir : 0;
      });
    }
    var trh = TD.el('tr');
    cols.forEach(function (c) {
      var cls = 'sortable' + (c.num && c.key !== 'status' ? ' num' : '') +
        (state.sort.col === c.key ? (state.sort.dir > 0 ? ' sorted-asc' : ' sorted-desc') : '');
      trh.appendChild(TD.el('th', { class: cls, title: 'sort by ' + c.label, onclick: function () {
        if (state.sort.col === c.key) state.sort.dir = -state.sort.dir; else { state.sort.col = c.key; state.sort.dir = 1; }
        renderChildren(state.sweep);
      } }, c.label));
    });
    var tb = TD.el('tbody');
    rows.forEach(function (r) {
      var tr = TD.el('tr');
      cols.forEach(function (c) {
        var v = c.get(r);
        var cell;
        if (c.key === 'id') cell = r.id != null ? TD.el('a', { href: 'job.html?id=' + encodeURIComponent(r.id) }, '#' + r.id) : '';
        else if (c.key === 'status') { cell = TD.statusBadge(r.status); if (r.error) cell.title = r.error; }
        else if (c.key === 'error') cell = v ? TD.el('span', { class: 'muted small', title: v }, v.length > 90 ? v.slice(0, 88) + '…' : v) : '';
        else cell = v === undefined ? '' : (v !== null && typeof v === 'object' ? JSON.stringify(v) : TD.fmt(TD.num(v) != null ? TD.num(v) : v, 5));
        tr.appendChild(TD.el('td', { class: c.num && c.key !== 'status' ? 'num' : '' }, cell));
      });
      tb.appendChild(tr);
    });
    var host = TD.clear(TD.$('#children'));
    if (!rows.length) { host.appendChild(TD.el('p', { class: 'muted' }, 'no children')); return; }
    host.appendChild(TD.el('table', { class: 'data' }, TD.el('thead', {}, trh), tb));
  }

  function refresh() {
    if (state.busy) return;
    state.busy = true;
    clearTimeout(state.timer);
    TD.api('/api/v1/sweeps/' + encodeURIComponent(state.id)).then(function (raw) {
      var sw = adaptSweep(raw);
      state.sweep = sw;
      TD.$('#loading').hidden = true;
      TD.$('#content').hidden = false;
      renderHead(sw);
      renderFit(sw);
      renderChildren(sw);
      if (TD.sweepAnalysis) TD.sweepAnalysis.render(sw);
      TD.$('#raw').textContent = JSON.stringify(raw, null, 2);
      TD.$('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      TD.hideError();
    }).catch(function (e) {
      if (e.status === 404) { TD.$('#loading').textContent = 'No sweep with id ' + state.id + '.'; state.gone = true; }
      else TD.showError('could not load the sweep', e);
    }).then(function () {
      state.busy = false;
      var sw = state.sweep;
      var active = !sw || sw.status === 'running' || sw.status === 'queued' ||
        (Number(sw.counts.running) || 0) + (Number(sw.counts.queued) || 0) > 0;
      TD.$('#live').hidden = !active || state.gone;
      if (active && !state.gone) state.timer = setTimeout(refresh, POLL_MS);
    });
  }

  function init() {
    state.id = TD.qs('id');
    if (!state.id) { TD.$('#loading').textContent = 'No sweep id given: open sweep.html?id=N'; return; }
    TD.$('#cancel').addEventListener('click', function () {
      TD.api('/api/v1/sweeps/' + encodeURIComponent(state.id) + '/cancel', { method: 'POST', body: {} })
        .then(refresh).catch(function (e) { TD.showError('cancel', e); });
    });
    TD.$('#jobs-link').href = 'index.html#sweep=' + encodeURIComponent(state.id);
    refresh();
  }

  TD.sweep = { adaptSweep: adaptSweep, adaptFit: adaptFit, getPath: getPath };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
