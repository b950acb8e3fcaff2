/* charts.js: a thin wrapper around uPlot for the dashboard. A TD.chart is a card with a
 * title, a log-y (optionally log-x) toggle, a note line and one uPlot instance. Series are
 * given as separate (x, y) arrays and aligned here: a point missing from a series because
 * another series has that x is `undefined` (uPlot spans it), a non-finite value is `null`
 * (uPlot draws a gap). On a log axis, values <= 0 become gaps too. */
(function () {
  'use strict';
  var TD = (window.TD = window.TD || {});
  TD.charts = [];  /* every live chart, for resizing and for the browser test */

  TD.PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2',
    '#db2777', '#65a30d', '#475569', '#ea580c', '#4f46e5', '#0d9488'];

  function finite(v) { return typeof v === 'number' && isFinite(v); }
  /* uPlot 1.6's log-axis split generator loops for ever (or throws "Invalid array length")
   * once the axis reaches below about 1e-22, so a log axis keeps values in [1e-20, 1e100]
   * and any axis |v| <= 1e100; values outside are left out and counted in the chart note.
   * (Bounds found by drawing ranges in headless Chromium; 1e-23 hangs, 1e-22 draws.) */
  var MAG_MAX = 1e100, LOG_MIN = 1e-20;

  /* align(series, logX, logY) -> {data, hidden} with data = [xs, ys_1, ..., ys_n]. */
  /* logY === 'decades': y is drawn as log10(y) on a linear axis labelled 1eK, for ranges uPlot's
   * log axis cannot draw (a loss reaching 1e228, or below 1e-20): every decade keeps a label. */
  function align(series, logX, logY) {
    var dec = logY === 'decades';
    var set = new Set();
    series.forEach(function (s) {
      var xs = s.x || [];
      for (var i = 0; i < xs.length; i++) {
        var x = xs[i];
        if (finite(x) && Math.abs(x) <= MAG_MAX && !(logX && x < LOG_MIN)) set.add(x);
      }
    });
    var xs = Array.from(set).sort(function (a, b) { return a - b; });
    var pos = new Map();
    for (var i = 0; i < xs.length; i++) pos.set(xs[i], i);
    var hidden = 0, extreme = 0;
    var data = [xs];
    series.forEach(function (s) {
      var col = new Array(xs.length).fill(undefined);
      var sx = s.x || [], sy = s.y || [];
      var n = Math.min(sx.length, sy.length);
      for (var k = 0; k < n; k++) {
        var j = pos.get(sx[k]);
        if (j === undefined) continue;
        var y = sy[k];
        if (!finite(y)) col[j] = null;
        else if (logY && y <= 0) { col[j] = null; hidden++; }
        else if (dec) col[j] = Math.log10(y);
        else if (logY ? (y < LOG_MIN || y > MAG_MAX) : Math.abs(y) > MAG_MAX) { col[j] = null; extreme++; }
        else col[j] = y;
      }
      data.push(col);
    });
    return { data: data, hidden: hidden, extreme: extreme };
  }

  /* One colour per key on a page: a series without a colour of its own gets the next palette
   * colour the first time its label appears, and the same one on every later chart. */
  var keyColors = new Map();
  TD.keyColor = function (label) {
    if (!keyColors.has(label)) keyColors.set(label, TD.PALETTE[keyColors.size % TD.PALETTE.length]);
    return keyColors.get(label);
  };

  /* indexes of columns equal to an earlier one (with at least one value): drawn dashed on top,
   * so that e.g. a full-batch analysis_loss equal to train_loss stays visible; series marked
   * aux (band edges, the raw series behind a smoothed one) are left out */
  function duplicates(data, series) {
    var dup = {};
    var aux = function (i) { return series && series[i - 1] && series[i - 1].aux; };
    for (var i = 2; i < data.length; i++) {
      if (aux(i)) continue;
      for (var j = 1; j < i; j++) {
        if (aux(j)) continue;
        var a = data[i], b = data[j], same = true, any = false;
        for (var k = 0; k < a.length && same; k++) { if (a[k] !== b[k]) same = false; else if (a[k] != null) any = true; }
        if (same && any) { dup[i] = j; break; }
      }
    }
    return dup;
  }

  function countValues(col) {
    var n = 0;
    for (var i = 0; i < col.length; i++) if (col[i] != null) n++;
    return n;
  }

  /* On a log axis keep only 1-2-5 splits (decades only past four decades, every k-th decade
   * past eight), for labels, ticks and grid alike: uPlot's default minor grid is too dense. */
  function logFilter(u, splits, axisIdx) {
    var pos = splits.filter(function (v) { return v != null && v > 0; });
    if (!pos.length) return splits;
    var dec = Math.log10(Math.max.apply(null, pos) / Math.min.apply(null, pos));
    /* a narrow x axis has no room for 1-2-5 labels over several decades ("500010000"):
     * decades only below about 150 CSS px per decade (y labels stack: 60 px is enough) */
    var px = (axisIdx === 0 ? u.bbox.width : u.bbox.height) / (window.devicePixelRatio || 1);
    var crowded = dec > 0 && px / dec < (axisIdx === 0 ? 150 : 60);
    var keep = dec > 4 || (crowded && dec > 1.5) ? [1] : dec > 1.5 ? [1, 2, 5] : null;
    var every = dec > 8 ? Math.ceil(dec / 8) : 1;
    return splits.map(function (v) {
      if (v == null || v <= 0) return null;
      if (!keep) return v;
      var e = Math.floor(Math.log10(v) + 1e-9);
      var m = Math.round(v / Math.pow(10, e) * 1000) / 1000;
      return keep.indexOf(m) >= 0 && e % every === 0 ? v : null;
    });
  }
  function ticks(u, splits) { return splits.map(function (v) { return v == null ? '' : TD.fmtAxis(v); }); }
  function axisOpts(a, log) {
    if (log) { a.filter = logFilter; a.grid = { filter: logFilter }; a.ticks = { filter: logFilter }; }
    return a;
  }
  /* The hover readout: a series without a point at the cursor's x (a sparse series, e.g. an
   * evaluation every 100 steps) shows its nearest point, marked with that point's x. */
  function fmtLegend(u, v, si, idx) {
    if (u._tdDecades) { /* log10 drawn: show the value */
      if (v != null) return TD.fmt(Math.pow(10, v), 5);
    }
    if (v != null) return TD.fmt(v, 5);
    if (idx == null || si == null || !u.data[si]) return '—';
    var col = u.data[si], xs = u.data[0];
    for (var d = 1; d < col.length; d++) {
      var l = idx - d, r = idx + d, k = l >= 0 && col[l] != null ? l : r < col.length && col[r] != null ? r : -1;
      if (k >= 0) return TD.fmt(u._tdDecades ? Math.pow(10, col[k]) : col[k], 5) + ' (at ' + TD.fmt(xs[k], 6) + ')';
      if (l < 0 && r >= col.length) break;
    }
    return '—';
  }

  /* TD.chart(parent, opts): opts = {title, xLabel, yLabel, logY, logX, logToggle (default
   * true), logXToggle, height, id, wide, intX (integer x ticks)}. Returns {set(series, extra), destroy(), card, u}.
   * series: [{label, x, y, color, dash, width, style: 'line'|'points'|'bars', show, points: false
   * (a line without point markers, however few its points), spanGaps (join a line across x
   * values at which it has no point)}]
   * extra: {bands: [[hiIndex, loIndex]] (0-based indexes into series), note: 'text'} */
  TD.chart = function (parent, opts) {
    opts = opts || {};
    var self = { opts: opts, u: null, logY: !!opts.logY, logX: !!opts.logX, zoomed: false,
      series: [], extra: {}, sig: '' };
    var note = TD.el('span', { class: 'chart-note' });
    var head = TD.el('div', { class: 'chart-head' }, TD.el('h3', {}, opts.title || ''));
    var toggles = TD.el('span', { class: 'chart-toggles' });
    if (opts.logXToggle) {
      var cbx = TD.el('input', { type: 'checkbox' });
      cbx.checked = self.logX;
      cbx.addEventListener('change', function () { self.logX = cbx.checked; rebuild(); if (opts.onLogX) opts.onLogX(self.logX); });
      toggles.appendChild(TD.el('label', { class: 'toggle' }, cbx, ' log x'));
    }
    if (opts.logToggle !== false) {
      var cb = TD.el('input', { type: 'checkbox', class: 'logy' });
      cb.checked = self.logY;
      cb.addEventListener('change', function () { self.logY = cb.checked; rebuild(); if (opts.onLog) opts.onLog(self.logY); });
      self.logBox = cb;
      toggles.appendChild(TD.el('label', { class: 'toggle' }, cb, ' log y'));
    }
    head.appendChild(toggles);
    if (opts.tools) opts.tools.forEach(function (t) { toggles.appendChild(t); });
    /* an accessible name: screen readers announce the chart by its title */
    var body = TD.el('div', { class: 'chart-body', role: 'img', 'aria-label': 'chart: ' + (opts.title || '') });
    var card = TD.el('div', { class: 'card chart-card' + (opts.wide ? ' wide' : ''), id: opts.id || null },
      head, body, TD.el('div', { class: 'chart-foot' }, note));
    parent.appendChild(card);
    self.card = card;

    function width() {
      var w = body.clientWidth || (card.clientWidth - 24) || 600;
      return Math.max(200, w);
    }

    function build(al) {
      var dup = duplicates(al.data, self.series);
      self.dups = dup;
      var ser = [{ label: opts.xLabel || 'step', value: function (u, v) {
        return v == null ? '—' : opts.timeX ? new Date(v * 1000).toLocaleString() : TD.fmt(v, 6); } }];
      self.series.forEach(function (s, i) {
        var color = s.color || TD.PALETTE[i % TD.PALETTE.length];
        var n = countValues(al.data[i + 1]);
        var style = s.style || 'line';
        var o = {
          label: s.label, stroke: color, width: s.width || 1.5, spanGaps: !!s.spanGaps,
          value: fmtLegend, show: s.show !== false,
          points: { show: style === 'points' || (style === 'line' && s.points !== false && n > 0 && n <= 60), size: style === 'points' || n <= 10 ? 6 : 4, fill: color },
        };
        if (s.dash) o.dash = s.dash;
        if (dup[i + 1]) { o.dash = [7, 5]; o.width = (s.width || 1.5) + 1; }
        if (style === 'points') o.paths = function () { return null; };
        if (style === 'bars') {
          o.paths = uPlot.paths.bars({ size: [0.6, 60] });
          o.fill = color + '99';
          o.points = { show: false };
        }
        if (s.fill) o.fill = s.fill;
        ser.push(o);
      });
      var bands = (self.extra.bands || []).map(function (b) {
        return { series: [b[0] + 1, b[1] + 1], fill: b[2] || 'rgba(37, 99, 235, 0.12)' };
      });
      var hasBars = self.series.some(function (s) { return s.style === 'bars'; });
      var uopts = {
        width: width(), height: opts.height || 260,
        scales: {
          x: { time: !!opts.timeX && !self.logX, distr: self.logX ? 3 : 1,
            range: hasBars && !self.logX ? function (u, min, max) { return [min - 0.5, max + 0.5]; } : undefined },
          /* bars start at zero (a bar's length is its value) */
          y: { distr: self.logY && !self.decades ? 3 : 1,
            range: hasBars && !self.logY ? function (u, min, max) {
              var lo = Math.min(0, min), hi = Math.max(0, max), pad = (hi - lo) * 0.05 || 1;
              return [lo < 0 ? lo - pad : 0, hi > 0 ? hi + pad : 0];
            } : undefined },
        },
        series: ser,
        bands: bands,
        axes: [
          axisOpts({ label: opts.xLabel || 'step', labelSize: 18, size: 36, values: opts.timeX && !self.logX ? undefined : ticks,
            incrs: opts.intX ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] : undefined }, self.logX),
          self.decades
            ? { label: opts.yLabel || '', labelSize: opts.yLabel ? 18 : 0, size: 64,
                incrs: [1, 2, 5, 10, 20, 50, 100, 200],
                values: function (u, splits) { return splits.map(function (v) { return v == null || Math.abs(v - Math.round(v)) > 1e-9 ? '' : '1e' + Math.round(v); }); } }
            : axisOpts({ label: opts.yLabel || '', labelSize: opts.yLabel ? 18 : 0, size: 64, values: ticks }, self.logY),
        ],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        hooks: {
          setSelect: [function (u) {
            if (u.select.width > 0) {
              self.zoomed = true;
              if (opts.onZoom) opts.onZoom(u.posToVal(u.select.left, 'x'), u.posToVal(u.select.left + u.select.width, 'x'));
            }
          }],
        },
      };
      if (self.u) { self.u.destroy(); self.u = null; }
      TD.clear(body);
      self.u = new uPlot(uopts, al.data, body);
      self.u._tdDecades = self.decades;
      self.u.over.addEventListener('dblclick', function () { self.zoomed = false; if (opts.onZoom) opts.onZoom(null, null); });
      if (self.pendingZoom) {
        var z = self.pendingZoom;
        self.pendingZoom = null;
        self.zoomed = true;
        self.u.setScale('x', { min: z[0], max: z[1] });
      }
    }

    function render() {
      var al = align(self.series, self.logX, self.logY);
      /* a log axis beyond what uPlot draws: switch to decades rather than leave points out */
      self.decades = false;
      if (self.logY && al.extreme > 0) {
        al = align(self.series, self.logX, 'decades');
        self.decades = true;
      }
      var msgs = [];
      if (self.extra.note) msgs.push(self.extra.note);
      var dd = duplicates(al.data, self.series);
      Object.keys(dd).forEach(function (i) {
        msgs.push(self.series[i - 1].label + ' equals ' + self.series[dd[i] - 1].label + ' (drawn dashed on top)');
      });
      if (al.hidden > 0) msgs.push(al.hidden + ' value(s) ≤ 0 not shown on the log axis');
      if (self.decades) msgs.push('log y drawn in decades (values beyond [1e-20, 1e100]); the readout shows the values');
      if (al.extreme > 0) msgs.push(al.extreme + ' value(s) beyond ' + (self.logY ? '[1e-20, 1e100]' : '±1e100') + ' not drawn');
      note.textContent = msgs.join(' · ');
      card.classList.toggle('has-note', msgs.length > 0);
      if (al.data[0].length === 0) {
        if (self.u) { self.u.destroy(); self.u = null; }
        TD.clear(body).appendChild(TD.el('div', { class: 'empty' }, self.extra.empty || 'no data yet'));
        self.sig = '';
        return;
      }
      var sig = [self.logX, self.logY, self.decades, JSON.stringify(self.extra.bands || [])].concat(
        self.series.map(function (s) { return s.label + '|' + (s.style || '') + '|' + (s.color || ''); })).join('#');
      if (self.u && sig === self.sig) {
        self.u.setData(al.data, !self.zoomed);
      } else {
        build(al);
        self.sig = sig;
      }
    }

    function rebuild() { self.sig = ''; self.zoomed = false; safe(render); }
    function safe(f) {
      try { f(); } catch (e) {
        note.textContent = 'chart error: ' + (e && e.message ? e.message : e);
        if (window.console && console.warn) console.warn(e);
      }
    }

    self.set = function (series, extra) {
      self.series = series || [];
      self.series.forEach(function (s) { if (!s.color) s.color = TD.keyColor(s.label); });
      self.extra = extra || {};
      safe(render);
      return self;
    };
    /* zoomTo(min, max): show this x range (applied at the next draw if none yet). */
    self.zoomTo = function (min, max) {
      if (!(isFinite(min) && isFinite(max) && max > min)) return;
      if (self.u) { self.zoomed = true; self.u.setScale('x', { min: min, max: max }); }
      else self.pendingZoom = [min, max];
    };
    self.resize = function () {
      if (self.u) safe(function () { self.u.setSize({ width: width(), height: opts.height || 260 }); });
    };
    self.destroy = function () {
      if (self.u) self.u.destroy();
      self.u = null;
      card.remove();
      var i = TD.charts.indexOf(self);
      if (i >= 0) TD.charts.splice(i, 1);
    };
    TD.charts.push(self);
    return self;
  };

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { TD.charts.forEach(function (c) { c.resize(); }); }, 120);
  });
})();
