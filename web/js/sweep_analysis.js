/* sweep_analysis.js: the sweep page's analysis of its children: their curves of one metric on
 * one chart (one request to GET /api/v1/metrics?jobs=...), a scatter of a final summary value
 * against each swept parameter (log x where the axis is log-spaced), and a parallel-
 * coordinates plot (SVG) of the swept parameters and the summary value, one line per child.
 * Hooked from sweep.js with TD.sweepAnalysis.render(sweep) after each refresh. */
(function () {
  'use strict';
  var TD = window.TD;
  var st = { key: null, metric: null, sig: '', charts: [] };

  function num(v) { var n = TD.num(v); return n != null && isFinite(n) ? n : null; }
  /* an axis is log-spaced when its values are positive and span at least a factor 20, with
   * ratios between neighbours closer to constant than differences */
  function isLogAxis(vals) {
    var v = vals.map(num).filter(function (x) { return x != null; }).sort(function (a, b) { return a - b; })
      .filter(function (x, i, a) { return i === 0 || x !== a[i - 1]; });
    if (v.length < 3 || v[0] <= 0 || v[v.length - 1] / v[0] < 20) return false;
    var r = [], d = [];
    for (var i = 1; i < v.length; i++) { r.push(Math.log(v[i] / v[i - 1])); d.push(v[i] - v[i - 1]); }
    function cv(a) {
      var m = a.reduce(function (s, x) { return s + x; }, 0) / a.length;
      var s2 = a.reduce(function (s, x) { return s + (x - m) * (x - m); }, 0) / a.length;
      return Math.sqrt(s2) / Math.abs(m);
    }
    return cv(r) < cv(d);
  }

  function summaryKeys(sw) {
    var seen = {};
    sw.children.forEach(function (c) { Object.keys(c.summary).forEach(function (k) { if (num(c.summary[k]) != null) seen[k] = 1; }); });
    var keys = Object.keys(seen).sort();
    var fy = sw.fit && sw.fit.y ? String(sw.fit.y).replace(/^summary\./, '') : null;
    ['test_acc', 'test_loss', 'train_loss', 'final_loss', 'steps_to_target'].concat(fy ? [fy] : []).reverse().forEach(function (k) {
      var i = keys.indexOf(k);
      if (i > 0) { keys.splice(i, 1); keys.unshift(k); }
    });
    return keys;
  }

  /* colour of t in [0, 1]: from blue (low) to red (high), via grey */
  function ramp(t) {
    if (t == null || !isFinite(t)) return '#9ca3af';
    var a = [37, 99, 235], b = [220, 38, 38];
    return '#' + a.map(function (x, i) { return (256 + Math.round(x + (b[i] - x) * t)).toString(16).slice(1); }).join('');
  }

  function select(id, label, options, value, onchange) {
    var s = TD.el('select', { id: id, 'aria-label': label });
    options.forEach(function (o) { s.appendChild(TD.el('option', { value: o }, o)); });
    if (value != null) s.value = value;
    s.addEventListener('change', function () { onchange(s.value); });
    return TD.el('label', {}, label + ' ', s);
  }

  /* ---- parallel coordinates ---- */
  function varying(sw) { /* the swept axes with at least two distinct values */
    return sw.axes.filter(function (a) {
      var seen = {};
      sw.children.forEach(function (c) { seen[JSON.stringify(c.axes[a])] = 1; });
      return Object.keys(seen).length > 1;
    });
  }

  function parallel(host, sw, metric) {
    var axes = varying(sw);
    var dims = axes.map(function (a) {
      var vals = sw.children.map(function (c) { return c.axes[a]; });
      var nums = vals.map(num);
      var categorical = nums.some(function (v, i) { return v == null && vals[i] != null; });
      var d = { name: a, get: function (c) { return c.axes[a]; }, categorical: categorical };
      if (categorical) {
        d.cats = vals.map(function (v) { return JSON.stringify(v); }).filter(function (v, i, arr) { return arr.indexOf(v) === i; }).sort();
      } else {
        d.log = isLogAxis(vals);
      }
      return d;
    });
    dims.push({ name: 'summary.' + metric, get: function (c) { return c.summary[metric]; }, metric: true });
    dims.forEach(function (d) {
      if (d.categorical) return;
      var v = sw.children.map(function (c) { return num(d.get(c)); }).filter(function (x) { return x != null && (!d.log || x > 0); });
      d.lo = Math.min.apply(null, v); d.hi = Math.max.apply(null, v);
      if (d.log && !(d.lo > 0)) d.log = false;
      d.empty = !v.length;
    });
    function pos(d, v) { /* 0 (bottom) .. 1 (top), or null */
      if (d.categorical) { var i = d.cats.indexOf(JSON.stringify(v)); return d.cats.length < 2 ? 0.5 : i / (d.cats.length - 1); }
      var x = num(v);
      if (x == null || d.empty || (d.log && x <= 0)) return null;
      if (d.hi === d.lo) return 0.5;
      return d.log ? (Math.log(x) - Math.log(d.lo)) / (Math.log(d.hi) - Math.log(d.lo)) : (x - d.lo) / (d.hi - d.lo);
    }
    var W = Math.max(320, host.clientWidth || 700), H = 300, padX = 60, padT = 28, padB = 34;
    var step = dims.length > 1 ? (W - 2 * padX) / (dims.length - 1) : 0;
    var NS = 'http://www.w3.org/2000/svg';
    function s(tag, attrs, text) {
      var e = document.createElementNS(NS, tag);
      Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (text != null) e.textContent = text;
      return e;
    }
    var svg = s('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', class: 'parcoords',
      'aria-label': 'parallel coordinates of ' + dims.map(function (d) { return d.name; }).join(', ') + ': one line per child job' });
    var mdim = dims[dims.length - 1];
    var drawn = 0, skipped = 0;
    sw.children.forEach(function (c) {
      var pts = [];
      for (var i = 0; i < dims.length; i++) {
        var p = pos(dims[i], dims[i].get(c));
        if (p == null) { pts = null; break; }
        pts.push((padX + i * step).toFixed(1) + ',' + (padT + (1 - p) * (H - padT - padB)).toFixed(1));
      }
      if (!pts) { skipped++; return; }
      drawn++;
      var line = s('polyline', { points: pts.join(' '), fill: 'none', stroke: ramp(pos(mdim, mdim.get(c))),
        'stroke-width': 1.6, 'stroke-opacity': 0.8, class: 'pc-line', 'data-id': c.id });
      line.appendChild(s('title', {}, '#' + c.id + ': ' + dims.map(function (d) { var v = d.get(c); return d.name + '=' + (num(v) != null ? TD.fmt(num(v), 4) : JSON.stringify(v)); }).join(', ')));
      line.addEventListener('click', function () { location.href = 'job.html?id=' + c.id; });
      svg.appendChild(line);
    });
    dims.forEach(function (d, i) {
      var x = padX + i * step;
      svg.appendChild(s('line', { x1: x, x2: x, y1: padT, y2: H - padB, stroke: 'currentColor', 'stroke-opacity': 0.5 }));
      svg.appendChild(s('text', { x: x, y: H - 12, 'text-anchor': 'middle', 'font-size': 12, fill: 'currentColor' }, d.name + (d.log ? ' (log)' : '')));
      var top, bot;
      if (d.categorical) { top = d.cats[d.cats.length - 1]; bot = d.cats[0]; }
      else if (!d.empty) { top = TD.fmt(d.hi, 3); bot = TD.fmt(d.lo, 3); }
      if (top != null) {
        svg.appendChild(s('text', { x: x, y: padT - 8, 'text-anchor': 'middle', 'font-size': 11, fill: 'currentColor' }, String(top).replace(/"/g, '')));
        svg.appendChild(s('text', { x: x + 4, y: H - padB + 12, 'text-anchor': 'start', 'font-size': 10, fill: 'currentColor', 'fill-opacity': 0.7 }, String(bot).replace(/"/g, '')));
      }
      if (d.categorical && d.cats.length > 2) d.cats.slice(1, -1).forEach(function (cv, k) {
        var y = padT + (1 - (k + 1) / (d.cats.length - 1)) * (H - padT - padB);
        svg.appendChild(s('text', { x: x + 4, y: y, 'font-size': 10, fill: 'currentColor' }, cv.replace(/"/g, '')));
      });
    });
    host.appendChild(svg);
    host.appendChild(TD.el('p', { class: 'muted small' }, drawn + ' child(ren) drawn' +
      (skipped ? '; ' + skipped + ' without a finite ' + mdim.name + ' (or a value off a log axis) left out' : '') +
      '. Colour: ' + mdim.name + ' from low (blue) to high (red). Click a line to open the job.'));
    return drawn;
  }

  function render(sw) {
    var host = TD.$('#analysis');
    if (!host || !sw || !sw.children.length) return;
    var ids = sw.children.map(function (c) { return c.id; }).filter(function (x) { return x != null; });
    var finished = sw.children.filter(function (c) { return !TD.ACTIVE[c.status]; }).length;
    var keys = summaryKeys(sw);
    if (!st.metric || keys.indexOf(st.metric) < 0) st.metric = keys[0] || null;
    var sig = ids.join(',') + '|' + finished + '|' + st.key + '|' + st.metric;
    if (sig === st.sig) return;
    st.sig = sig;
    st.charts.forEach(function (c) { c.destroy(); });
    st.charts = [];
    TD.clear(host);
    var seedAxis = sw.axes.indexOf('seed') >= 0;
    var cmp = TD.el('a', { id: 'compare-children', href: 'compare.html?jobs=' + ids.slice(0, 100).join(',') + (seedAxis ? '&group=seed' : '') }, 'Compare the children' + (ids.length > 100 ? ' (first 100)' : ''));
    var controls = TD.el('div', { class: 'row' }, cmp);
    if (keys.length) controls.appendChild(select('pc-metric', 'final value', keys, st.metric, function (v) { st.metric = v; st.sig = ''; render(sw); }));
    host.appendChild(controls);

    /* parallel coordinates and scatters need a summary value */
    if (st.metric && varying(sw).length) {
      var pcCard = TD.el('div', { class: 'card', id: 'parcoords' }, TD.el('h3', {}, 'Parallel coordinates'));
      host.appendChild(pcCard);
      parallel(pcCard, sw, st.metric);
      var sc = TD.el('div', { class: 'charts', id: 'scatters' });
      host.appendChild(sc);
      varying(sw).forEach(function (a) {
        /* children sharing an x go to separate point series (the k-th of each x in series k),
         * as the chart aligns series on x */
        var byX = new Map();
        sw.children.forEach(function (c) {
          var x = num(c.axes[a]), y = num(c.summary[st.metric]);
          if (x == null || y == null) return;
          if (!byX.has(x)) byX.set(x, []);
          byX.get(x).push(y);
        });
        if (!byX.size) return;
        var mult = 0;
        byX.forEach(function (v) { mult = Math.max(mult, v.length); });
        var series = [];
        for (var k = 0; k < mult; k++) {
          var xs = [], ys = [];
          byX.forEach(function (v, x) { if (v.length > k) { xs.push(x); ys.push(v[k]); } });
          series.push({ label: st.metric + (mult > 1 ? ' (' + (k + 1) + ')' : ''), x: xs, y: ys, style: 'points', color: TD.PALETTE[0] });
        }
        var logx = isLogAxis(sw.children.map(function (c) { return c.axes[a]; }));
        var ch = TD.chart(sc, { title: st.metric + ' vs ' + a, xLabel: a, logX: logx, logXToggle: true, id: 'scatter-' + a.replace(/[^A-Za-z0-9_-]/g, '_') });
        ch.set(series, { note: logx ? 'log x: the axis was log-spaced' : '' });
        st.charts.push(ch);
      });
    }

    /* the children's curves of one key */
    var curveHost = TD.el('div', { class: 'charts one', id: 'children-curves' });
    host.appendChild(curveHost);
    TD.api('/api/v1/metrics?jobs=' + ids.slice(0, 100).join(',') + '&max_points=2').then(function (d) {
      var all = {};
      Object.keys(d.jobs).forEach(function (id) { Object.keys(d.jobs[id].metrics).forEach(function (k) { all[k] = 1; }); });
      var ks = Object.keys(all).sort();
      if (!ks.length) return null;
      if (!st.key || ks.indexOf(st.key) < 0) st.key = ['train_loss', 'loss', 'test_loss'].filter(function (k) { return all[k]; })[0] || ks[0];
      controls.appendChild(select('curve-key', 'curves of', ks, st.key, function (v) { st.key = v; st.sig = ''; render(sw); }));
      return TD.api('/api/v1/metrics?jobs=' + ids.slice(0, 100).join(',') + '&keys=' + encodeURIComponent(st.key) + '&max_points=500');
    }).then(function (d) {
      if (!d) return;
      var mdim = keys.length ? st.metric : null;
      var vals = sw.children.map(function (c) { return mdim ? num(c.summary[mdim]) : null; }).filter(function (v) { return v != null; });
      var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
      var series = [];
      sw.children.forEach(function (c) {
        var p = d.jobs[String(c.id)], s = p && p.metrics[st.key];
        if (!s) return;
        var v = mdim ? num(c.summary[mdim]) : null;
        var label = '#' + c.id + ' ' + sw.axes.map(function (a) { return a + '=' + (num(c.axes[a]) != null ? TD.fmt(num(c.axes[a]), 4) : JSON.stringify(c.axes[a])); }).join(', ');
        series.push({ label: label, x: s.step, y: s.value.map(TD.num), color: ramp(v == null || hi === lo ? null : (v - lo) / (hi - lo)), width: 1.2, points: false });
      });
      var ch = TD.chart(curveHost, { title: st.key + ' of every child', xLabel: 'step', id: 'children-chart' });
      ch.set(series, { note: mdim ? 'colour: summary.' + mdim + ' from low (blue) to high (red)' : '' });
      st.charts.push(ch);
    }).catch(function (e) { TD.showError('could not load the children’s metrics', e); });
  }

  TD.sweepAnalysis = { render: render, isLogAxis: isLogAxis };
})();
