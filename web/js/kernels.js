/* kernels.js: the job page's chapter-6 views (kind `ntk`): the kernel error against width on
 * log-log axes with the 1/sqrt(width) reference line, and the kernel matrices
 * (kernel_analytic.json, kernel_empirical.json: {n, step, width, matrix}) as heat maps.
 * Hooked from job.js: TD.kernels.render(job) after each job refresh. */
(function () {
  'use strict';
  var drawn = {};

  function section() {
    var s = TD.$('#kernels-card');
    if (s) return s;
    s = TD.el('section', { id: 'kernels-card' }, TD.el('h2', {}, 'Kernels against width'),
      TD.el('div', { id: 'kernels-charts', class: 'charts' }));
    var metrics = TD.$('#charts');
    var host = metrics && metrics.closest('section');
    if (host && host.parentNode) host.parentNode.insertBefore(s, host);
    else document.body.appendChild(s);
    return s;
  }

  /* a blue-white-red-free ramp: dark (low) to light (high), viridis-like end points */
  function color(t) {
    var a = [68, 1, 84], b = [33, 145, 140], c = [253, 231, 37];
    var u = t < 0.5 ? t * 2 : (t - 0.5) * 2, p = t < 0.5 ? a : b, q = t < 0.5 ? b : c;
    return 'rgb(' + [0, 1, 2].map(function (i) { return Math.round(p[i] + (q[i] - p[i]) * u); }).join(',') + ')';
  }

  function heat(host, title, art) {
    var M = art && art.matrix;
    if (!Array.isArray(M) || !M.length) return;
    var m = M.length, lo = Infinity, hi = -Infinity;
    M.forEach(function (r) { r.forEach(function (v) { if (typeof v === 'number') { lo = Math.min(lo, v); hi = Math.max(hi, v); } }); });
    var px = Math.max(2, Math.floor(320 / m));
    var cv = TD.el('canvas', { width: String(m * px), height: String(m * px), class: 'heat' });
    var g = cv.getContext('2d');
    M.forEach(function (r, i) {
      r.forEach(function (v, j) {
        g.fillStyle = typeof v === 'number' && hi > lo ? color((v - lo) / (hi - lo)) : '#888';
        g.fillRect(j * px, i * px, px, px);
      });
    });
    var sub = art.n + ' x ' + art.n + (art.step > 1 ? ', block means of ' + art.step : '') +
      (art.width ? ', width ' + art.width : '') + '; range ' + TD.fmt(lo, 4) + ' .. ' + TD.fmt(hi, 4);
    host.appendChild(TD.el('div', { class: 'card chart-card' }, TD.el('h3', {}, title), cv,
      TD.el('div', { class: 'chart-foot small muted' }, sub)));
  }

  function render(job) {
    if (!job || job.kind !== 'ntk' || !job.summary || !Array.isArray(job.summary.widths)) return;
    var key = job.id + ':' + job.status;
    if (drawn[key]) return;
    drawn[key] = true;
    section();
    var host = TD.clear(TD.$('#kernels-charts'));
    var s = job.summary, w = s.widths.map(Number);
    var series = [];
    [['ntk_rel_error', 'NTK rel. error'], ['nngp_rel_error', 'NNGP rel. error (outputs over seeds)'],
      ['nngp_cond_rel_error', 'NNGP rel. error (conditional)']].forEach(function (p) {
      if (Array.isArray(s[p[0]])) series.push({ label: p[1], x: w, y: s[p[0]].map(TD.num) });
    });
    var e0 = TD.num(s.ntk_rel_error && s.ntk_rel_error[0]);
    if (e0 && w.length) {
      series.push({ label: '1/sqrt(width) through the first point', x: w,
        y: w.map(function (x) { return e0 * Math.sqrt(w[0] / x); }), dash: [6, 4], points: false });
    }
    TD.chart(host, { title: 'relative Frobenius error against the analytic kernel', xLabel: 'width',
      logX: true, logY: true, logXToggle: true, wide: true, height: 320, id: 'ntk-width' })
      .set(series, { note: 'fitted slope of the NTK error: ' + TD.fmt(TD.num(s.ntk_error_slope), 3) + ' (theory: -0.5)' });
    ['kernel_analytic.json', 'kernel_empirical.json'].forEach(function (name) {
      TD.api('/api/v1/jobs/' + encodeURIComponent(job.id) + '/artifacts/' + name).then(function (a) {
        heat(host, name === 'kernel_analytic.json' ? 'analytic NTK' : 'empirical NTK (seed 0, largest width)', a);
      }).catch(function () {});
    });
  }

  /* lazy: trained (solid) and kernel-predicted (dashed) training loss, one colour per width */
  function renderLazy(job) {
    if (!job || job.kind !== 'lazy') return;
    var key = job.id + ':' + job.status + ':' + (job.progress && job.progress.done);
    if (drawn[key]) return;
    drawn[key] = true;
    section();
    TD.$('#kernels-card h2').textContent = 'Trained network against its kernel prediction';
    TD.api('/api/v1/jobs/' + encodeURIComponent(job.id) + '/metrics?max_points=2000').then(function (raw) {
      var met = (raw && raw.metrics) || {};
      var widths = Object.keys(met).map(function (k) { var m = /^train_loss\.w(\d+)$/.exec(k); return m ? Number(m[1]) : null; })
        .filter(function (w) { return w != null; }).sort(function (a, b) { return a - b; });
      var series = [];
      widths.forEach(function (w, i) {
        var color = TD.PALETTE[i % TD.PALETTE.length];
        [['train_loss', 'trained', null], ['pred_loss', 'NTK prediction', [6, 4]]].forEach(function (p) {
          var m = met[p[0] + '.w' + w];
          if (m) series.push({ label: p[1] + ' w=' + w, x: m.step, y: m.value.map(TD.num), color: color, dash: p[2] });
        });
      });
      var host = TD.clear(TD.$('#kernels-charts'));
      TD.chart(host, { title: 'training loss: trained (solid) and NTK-predicted (dashed), per width', xLabel: 'step',
        logY: true, wide: true, height: 320, id: 'lazy-loss' }).set(series);
    }).catch(function () { drawn[key] = false; });
  }

  TD.kernels = { render: function (job) { render(job); renderLazy(job); } };
})();
