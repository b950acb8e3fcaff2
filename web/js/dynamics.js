/* dynamics.js: the job page's "Dynamics" section for the `momentum` and `game` kinds
 * (chapters 9, 10), drawn on plain canvases: the stability-region heat map with its analytic
 * boundaries, predicted against observed rates per mode, eigenvalues in the complex plane with
 * the unit circle, the phase plane (x/0 against y/0, with other jobs' trajectories overlaid
 * from the same start), and the GAN's samples at a chosen step beside the target mixture.
 * Entry point: TD.dynamics.render(job, artifactNames), called by job.js on every refresh;
 * it redraws only when the job's status or its artifacts change. */
(function () {
  'use strict';
  var TD = (window.TD = window.TD || {});
  var last = '';
  var COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2'];

  function art(id, name) {
    return TD.api('/api/v1/jobs/' + encodeURIComponent(id) + '/artifacts/' + encodeURIComponent(name));
  }
  function unwrap(a) { return a && a.data !== undefined && a.name ? a.data : a; }

  /* A canvas with a data -> pixel mapping over [x0, x1] x [y0, y1]. */
  function plot(w, h, x0, x1, y0, y1, title) {
    var c = TD.el('canvas', { width: w, height: h, class: 'dyn-canvas' });
    var g = c.getContext('2d');
    var m = 36;
    var P = {
      c: c, g: g,
      x: function (v) { return m + (v - x0) / (x1 - x0) * (w - m - 8); },
      y: function (v) { return h - m + 4 - (v - y0) / (y1 - y0) * (h - m - 12); }
    };
    g.font = '11px sans-serif';
    g.fillStyle = '#333';
    g.strokeStyle = '#999';
    g.strokeRect(m, 8, w - m - 8, h - m - 4);
    g.fillText(fmt(x0), m, h - m + 16);
    g.fillText(fmt(x1), w - 40, h - m + 16);
    g.fillText(fmt(y0), 2, h - m + 4);
    g.fillText(fmt(y1), 2, 16);
    if (title) g.fillText(title, m + 4, h - 4);
    return P;
  }
  function fmt(v) { return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(1) : String(+v.toFixed(3)); }
  function line(P, pts, color, dash) {
    var g = P.g;
    g.save();
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    if (dash) g.setLineDash([5, 4]);
    g.beginPath();
    pts.forEach(function (p, i) { if (i) g.lineTo(P.x(p[0]), P.y(p[1])); else g.moveTo(P.x(p[0]), P.y(p[1])); });
    g.stroke();
    g.restore();
  }
  function dots(P, pts, color, r) {
    var g = P.g;
    g.fillStyle = color;
    pts.forEach(function (p) { g.fillRect(P.x(p[0]) - r / 2, P.y(p[1]) - r / 2, r, r); });
  }
  function circle(P, cx, cy, rad, color, dash) {
    var pts = [];
    for (var i = 0; i <= 128; i++) pts.push([cx + rad * Math.cos(2 * Math.PI * i / 128), cy + rad * Math.sin(2 * Math.PI * i / 128)]);
    line(P, pts, color, dash);
  }
  function card(title) { return TD.el('div', { class: 'card dyn-card' }, TD.el('h3', {}, title)); }

  /* rho in [0, 1.5] -> colour: blue (fast) .. white (1) .. red (diverges). */
  function heat(r) {
    if (!isFinite(r)) return 'rgb(120,0,0)';
    var t = Math.min(r, 1.5);
    if (t <= 1) { var a = Math.round(255 * t); return 'rgb(' + a + ',' + a + ',255)'; }
    var b = Math.round(255 * (1 - (t - 1) / 0.5)); return 'rgb(255,' + b + ',' + b + ')';
  }

  function stabilityMap(host, s) {
    ['heavy_ball', 'nesterov'].forEach(function (m) {
      var rho = s['rho_' + m];
      var lr = s.lr, b = s.momentum;
      var P = plot(360, 280, 0, lr[lr.length - 1], 0, b[b.length - 1],
        m + ': spectral radius over (lr, momentum) at lambda = ' + s.lambda);
      var cw = (P.x(lr[1]) - P.x(lr[0])) + 1, ch = (P.y(b[0]) - P.y(b[1])) + 1;
      for (var j = 0; j < b.length; j++)
        for (var i = 0; i < lr.length; i++) {
          P.g.fillStyle = heat(rho[j][i]);
          P.g.fillRect(P.x(lr[i]) - cw, P.y(b[j]) - ch / 2, cw, ch);
        }
      var bd = s.boundary_lr;
      line(P, [[bd.gd, 0], [bd.gd, b[b.length - 1]]], '#000', true);
      line(P, b.map(function (bb, k) { return [bd.heavy_ball[k], bb]; }), '#000');
      line(P, b.map(function (bb, k) { return [bd.nesterov[k], bb]; }), '#2ca02c');
      var c = card('Stability region (' + m + ')');
      c.appendChild(P.c);
      c.appendChild(TD.el('p', { class: 'small muted' },
        'blue: rho < 1 (darker is faster), red: rho > 1. Dashed: GD 2/lambda; black: heavy ball (2+2b)/lambda; green: Nesterov (2+2b)/((1+2b) lambda).'));
      host.appendChild(c);
    });
  }

  function modesCard(host, md, tuned) {
    var modes = md.modes || [];
    var lo = 1, hi = 0;
    modes.forEach(function (m) { [m.rho, m.observed_rate].forEach(function (v) { if (v != null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }); });
    if (hi <= lo) { lo = 0; hi = 1; }
    var pad = (hi - lo) * 0.05 + 1e-9;
    var P = plot(360, 280, lo - pad, hi + pad, lo - pad, hi + pad, 'observed rate (y) against predicted rho (x), one dot per mode');
    line(P, [[lo - pad, lo - pad], [hi + pad, hi + pad]], '#999', true);
    dots(P, modes.filter(function (m) { return m.observed_rate != null; }).map(function (m) { return [m.rho, m.observed_rate]; }), '#1f77b4', 5);
    var c = card('Predicted vs observed rates (' + md.method + ', lr ' + fmt(md.lr) + ', momentum ' + fmt(md.momentum) + ')');
    c.appendChild(P.c);
    var E = plot(280, 280, -1.2, 1.2, -1.2, 1.2, 'eigenvalues of every mode, unit circle');
    circle(E, 0, 0, 1, '#999', true);
    modes.forEach(function (m) { dots(E, [[m.eig_re[0], m.eig_im[0]], [m.eig_re[1], m.eig_im[1]]], m.damping === 'under' ? '#d62728' : m.damping === 'over' ? '#1f77b4' : '#2ca02c', 4); });
    c.appendChild(E.c);
    if (tuned && tuned.length) {
      var tb = TD.el('tbody');
      tuned.forEach(function (t) {
        tb.appendChild(TD.el('tr', {}, TD.el('td', {}, t.name), TD.el('td', { class: 'num' }, fmt(t.lr)), TD.el('td', { class: 'num' }, fmt(t.momentum)),
          TD.el('td', { class: 'num' }, t.stated_rate.toFixed(5)), TD.el('td', { class: 'num' }, t.worst_rho != null ? t.worst_rho.toFixed(5) : ''),
          TD.el('td', { class: 'num' }, t.observed_rate != null ? t.observed_rate.toFixed(5) : '')));
      });
      c.appendChild(TD.el('table', { class: 'data' }, TD.el('thead', {}, TD.el('tr', {}, ['tuning', 'lr', 'momentum', 'stated rate', 'worst rho', 'observed'].map(function (h) { return TD.el('th', {}, h); }))), tb));
    }
    host.appendChild(c);
  }

  function series(raw, key) {
    var m = raw && raw.metrics && raw.metrics[key];
    if (!m) return [];
    return m.value.map(function (v) { return typeof v === 'number' ? v : NaN; });
  }

  /* Phase plane: this job and the jobs listed in the input (same start). */
  function phaseCard(host, id) {
    var c = card('Phase plane: x/0 against y/0');
    var input = TD.el('input', { type: 'text', placeholder: 'other job ids, e.g. 12,13', size: 24 });
    var box = TD.el('div');
    function draw() {
      var ids = [id].concat(input.value.split(/[ ,]+/).filter(function (s) { return /^\d+$/.test(s); }));
      Promise.all(ids.map(function (j) {
        return Promise.all([TD.api('/api/v1/jobs/' + j), TD.api('/api/v1/jobs/' + j + '/metrics?keys=x/0,y/0&max_points=4000')]);
      })).then(function (rs) {
        var trs = rs.map(function (r) {
          var x = series(r[1], 'x/0'), y = series(r[1], 'y/0');
          return { name: '#' + r[0].id + ' ' + ((r[0].params || {}).algorithm || ''), pts: x.map(function (v, i) { return [v, y[i]]; }).filter(function (p) { return isFinite(p[0]) && isFinite(p[1]); }) };
        });
        var lim = 0;
        trs.forEach(function (t) { t.pts.forEach(function (p) { lim = Math.max(lim, Math.abs(p[0]), Math.abs(p[1])); }); });
        lim = lim > 0 ? lim * 1.05 : 1;
        var P = plot(420, 420, -lim, lim, -lim, lim, 'x/0 (horizontal), y/0 (vertical); equilibrium at 0');
        dots(P, [[0, 0]], '#000', 6);
        var legend = TD.el('p', { class: 'small' });
        trs.forEach(function (t, k) {
          line(P, t.pts, COLORS[k % COLORS.length]);
          legend.appendChild(TD.el('span', { style: { color: COLORS[k % COLORS.length], marginRight: '1em' } }, t.name));
        });
        TD.clear(box).appendChild(P.c);
        box.appendChild(legend);
      }).catch(function (e) { TD.clear(box).appendChild(TD.el('p', { class: 'muted' }, 'phase plane: ' + e.message)); });
    }
    input.addEventListener('change', draw);
    c.appendChild(TD.el('label', { class: 'small' }, 'overlay ', input));
    c.appendChild(box);
    host.appendChild(c);
    draw();
  }

  function eigCard(host, hist) {
    if (!Array.isArray(hist) || !hist.length) return;
    var c = card('Eigenvalues in the complex plane');
    var sel = TD.el('select', { 'aria-label': 'analysis step' });
    hist.forEach(function (h, i) { sel.appendChild(TD.el('option', { value: String(i) }, 'step ' + h.step)); });
    sel.value = String(hist.length - 1);
    var box = TD.el('div');
    function draw() {
      var h = hist[Number(sel.value)];
      TD.clear(box);
      [['game Jacobian J', h.jacobian_re, h.jacobian_im, false], ['update Jacobian (unit circle)', h.update_re, h.update_im, true]].forEach(function (s) {
        var lim = s[3] ? 1.2 : 0.1;
        s[1].forEach(function (v, i) { lim = Math.max(lim, Math.abs(v) * 1.1, Math.abs(s[2][i]) * 1.1); });
        var P = plot(300, 300, -lim, lim, -lim, lim, s[0]);
        line(P, [[-lim, 0], [lim, 0]], '#ccc');
        line(P, [[0, -lim], [0, lim]], '#ccc');
        if (s[3]) circle(P, 0, 0, 1, '#999', true);
        dots(P, s[1].map(function (v, i) { return [v, s[2][i]]; }), s[3] ? '#d62728' : '#1f77b4', 6);
        box.appendChild(P.c);
      });
      box.appendChild(TD.el('p', { class: 'small muted' }, 'update spectral radius ' + h.update_spectral_radius.toFixed(6)));
    }
    sel.addEventListener('change', draw);
    c.appendChild(TD.el('label', { class: 'small' }, 'analysis ', sel));
    c.appendChild(box);
    host.appendChild(c);
    draw();
  }

  function ganCard(host, id, names) {
    var steps = names.map(function (n) { var m = /^samples_step(\d+)\.json$/.exec(n); return m ? Number(m[1]) : null; })
      .filter(function (s) { return s !== null; }).sort(function (a, b) { return a - b; });
    if (!steps.length) return;
    var c = card('GAN samples beside the target mixture');
    var sel = TD.el('select', { 'aria-label': 'step' });
    steps.forEach(function (s) { sel.appendChild(TD.el('option', { value: String(s) }, 'step ' + s)); });
    sel.value = String(steps[steps.length - 1]);
    var box = TD.el('div');
    function draw() {
      art(id, 'samples_step' + sel.value + '.json').then(function (raw) {
        var a = unwrap(raw);
        var R = 0;
        a.centres.forEach(function (p) { R = Math.max(R, Math.hypot(p[0], p[1])); });
        var lim = R * 1.5 + 6 * a.std;
        var P = plot(380, 380, -lim, lim, -lim, lim, 'step ' + a.step + ': ' + a.modes_covered + ' modes covered, ' + (100 * a.good_fraction).toFixed(1) + '% within 3 std');
        dots(P, a.samples.filter(function (p) { return p[0] != null && p[1] != null; }), 'rgba(31,119,180,0.35)', 3);
        a.centres.forEach(function (p) { circle(P, p[0], p[1], 3 * a.std, '#d62728'); });
        var T = plot(380, 380, -lim, lim, -lim, lim, 'target: ' + a.centres.length + ' Gaussians, std ' + a.std);
        var seedPts = [];
        for (var k = 0; k < a.samples.length; k++) {
          var p = a.centres[k % a.centres.length], u = Math.random(), v = Math.random();
          var r = a.std * Math.sqrt(-2 * Math.log(u + 1e-12));
          seedPts.push([p[0] + r * Math.cos(2 * Math.PI * v), p[1] + r * Math.sin(2 * Math.PI * v)]);
        }
        dots(T, seedPts, 'rgba(44,160,44,0.35)', 3);
        TD.clear(box).appendChild(P.c);
        box.appendChild(T.c);
      }).catch(function (e) { TD.clear(box).appendChild(TD.el('p', { class: 'muted' }, 'samples: ' + e.message)); });
    }
    sel.addEventListener('change', draw);
    c.appendChild(TD.el('label', { class: 'small' }, 'samples at ', sel));
    c.appendChild(box);
    host.appendChild(c);
    draw();
  }

  function render(job, names) {
    var sec = TD.$('#dynamics');
    if (!sec || !job || (job.kind !== 'momentum' && job.kind !== 'game')) return;
    var sig = job.id + '|' + job.status + '|' + names.join(',');
    if (sig === last) return;
    last = sig;
    var host = TD.clear(TD.$('#dynamics-body'));
    sec.hidden = false;
    var id = job.id;
    var has = function (n) { return names.indexOf(n) >= 0; };
    if (job.kind === 'momentum') {
      if (has('stability_region.json')) art(id, 'stability_region.json').then(function (s) { stabilityMap(host, unwrap(s)); });
      if (has('modes.json')) Promise.all([art(id, 'modes.json'), has('tuned.json') ? art(id, 'tuned.json') : null])
        .then(function (r) { modesCard(host, unwrap(r[0]), unwrap(r[1])); });
      return;
    }
    var gname = ((job.params || {}).game || {}).name || 'bilinear';
    if (gname === 'gan_mixture') {
      ganCard(host, id, names);
      if (has('eigenvalues.json')) art(id, 'eigenvalues.json').then(function (h) { eigCard(host, unwrap(h)); });
      return;
    }
    phaseCard(host, id);
    if (has('eigenvalues.json')) art(id, 'eigenvalues.json').then(function (h) { eigCard(host, unwrap(h)); });
  }

  TD.dynamics = { render: render, heat: heat };
})();
