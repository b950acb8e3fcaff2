/* ch8.js: job-page plots of the chapter 8 artifacts (implicit regularization and Bayesian
 * inference), each with its theory drawn beside the observation:
 *   reliability.json  reliability diagram (bin confidence vs accuracy; the diagonal is perfect
 *                     calibration), MAP against each Laplace predictive;
 *   igr.json          distances GD-to-flow and GD-to-modified-flow against eta (log-log) with
 *                     the theory lines C eta and C eta^2, and the 2-D trajectories;
 *   filters.json      the GD filter 1 - (1 - eta lambda)^t and the ridge filter
 *                     lambda / (lambda + 1/(eta t)) over the spectrum;
 *   marglik.json      the Laplace log marginal likelihood over the prior precision;
 *   max_margin.json   the 2-D data, the max-margin separator and GD's final direction.
 * TD.ch8.render(name, obj, host) draws and returns true for these names; job.js calls it
 * before its generic artifact shapes. */
(function () {
  'use strict';
  var TD = window.TD = window.TD || {};
  var seq = 0;
  function id() { return 'ch8-' + (seq++); }
  function nums(a) { return (a || []).map(function (v) { return TD.num ? TD.num(v) : v; }); }

  function reliability(obj, host) {
    var series = [{ label: 'perfect calibration', x: [0, 1], y: [0, 1], dash: [4, 4], points: false, spanGaps: true }];
    Object.keys(obj).forEach(function (k) {
      var r = obj[k];
      if (!r || !r.confidence) return;
      if (k !== 'map' && !/glm$/.test(k)) return; /* the NN predictive is in the file */
      var xs = [], ys = [];
      r.confidence.forEach(function (c, i) {
        if (c != null && r.accuracy[i] != null) { xs.push(c); ys.push(r.accuracy[i]); }
      });
      series.push({ label: k + ' (ECE ' + (TD.fmt ? TD.fmt(r.ece, 3) : r.ece) + ')', x: xs, y: ys, style: 'points' });
    });
    TD.chart(host, { title: 'reliability diagram: accuracy against confidence (15 bins)', xLabel: 'confidence', id: id(), logToggle: false })
      .set(series);
    return true;
  }

  function igr(obj, host) {
    var eta = nums(obj.eta), df = nums(obj.dist_flow), dm = nums(obj.dist_mod);
    if (eta.length) {
      var i0 = 0;
      eta.forEach(function (e, i) { if (e < eta[i0]) i0 = i; });
      var c1 = df[i0] / eta[i0], c2 = dm[i0] / (eta[i0] * eta[i0]);
      TD.chart(host, { title: 'igr: distance at time ' + obj.time + ' against eta (slopes ' +
        (TD.fmt ? TD.fmt(obj.slope_flow, 3) + ', ' + TD.fmt(obj.slope_mod, 3) : '') + ')',
      xLabel: 'eta', logX: true, logY: true, logXToggle: true, id: id() }).set([
        { label: '|GD - flow on L|', x: eta, y: df, style: 'points' },
        { label: 'theory C eta', x: eta, y: eta.map(function (e) { return c1 * e; }), dash: [4, 4], points: false },
        { label: '|GD - flow on modified loss|', x: eta, y: dm, style: 'points' },
        { label: 'theory C eta^2', x: eta, y: eta.map(function (e) { return c2 * e * e; }), dash: [4, 4], points: false }]);
    }
    (obj.trajectories || []).slice(-2).forEach(function (tr) {
      var pick = function (a, j) { return a.map(function (p) { return p[j]; }); };
      TD.chart(host, { title: 'igr 2-D trajectories at eta ' + tr.eta + ' (b against a)', xLabel: 'a', id: id(), logToggle: false })
        .set([{ label: 'GD', x: pick(tr.gd, 0), y: pick(tr.gd, 1), style: 'points' },
          { label: 'flow on L', x: pick(tr.flow, 0), y: pick(tr.flow, 1), style: 'points' },
          { label: 'flow on L + eta/4 |grad L|^2', x: pick(tr.modified_flow, 0), y: pick(tr.modified_flow, 1), style: 'points' }]);
    });
    return true;
  }

  function filters(obj, host) {
    var lam = nums(obj.lambda);
    TD.chart(host, { title: 'spectral filters at step ' + obj.step + ' (ridge mu = 1/(eta t) = ' + (TD.fmt ? TD.fmt(obj.mu, 4) : obj.mu) + ')',
      xLabel: 'eigenvalue lambda', logX: true, logXToggle: true, id: id() }).set([
      { label: 'GD 1 - (1 - eta lambda)^t', x: lam, y: nums(obj.filter_gd) },
      { label: 'ridge lambda / (lambda + mu)', x: lam, y: nums(obj.filter_ridge), dash: [4, 4] }]);
    return true;
  }

  function marglik(obj, host) {
    var series = [];
    Object.keys(obj).forEach(function (k) {
      var o = obj[k];
      if (!o || !o.prior_precision) return;
      /* the far tails fall by orders of magnitude and would flatten the peak: keep the
       * points within 3 |max| of the maximum */
      var y = nums(o.log_marglik), mx = Math.max.apply(null, y.filter(function (v) { return v != null; }));
      series.push({ label: k + ' (P = ' + o.n_params + ', chosen ' + (TD.fmt ? TD.fmt(o.chosen, 4) : o.chosen) + ')',
        x: nums(o.prior_precision), y: y.map(function (v) { return v != null && v >= mx - 3 * Math.abs(mx) ? v : null; }) });
    });
    TD.chart(host, { title: 'Laplace log marginal likelihood against the prior precision', xLabel: 'prior precision delta',
      logX: true, logXToggle: true, logToggle: false, id: id() }).set(series);
    return true;
  }

  function maxMargin(obj, host) {
    var pts = obj.points || [];
    if (!pts.length || pts[0].length !== 3) return false; /* 2-D only */
    var pos = pts.filter(function (p) { return p[2] > 0; }), neg = pts.filter(function (p) { return p[2] < 0; });
    var w = obj.w_hat, f = obj.w_final;
    var r = 0;
    pts.forEach(function (p) { r = Math.max(r, Math.abs(p[0]), Math.abs(p[1])); });
    var line = function (v, off) { /* {x : <v, x> = off}, as two points along the line */
      var n2 = v[0] * v[0] + v[1] * v[1], x0 = [v[0] * off / n2, v[1] * off / n2], d = [-v[1], v[0]];
      var s = r / Math.sqrt(n2) * 1.5;
      var a = [x0[0] - s * d[0], x0[1] - s * d[1]], b = [x0[0] + s * d[0], x0[1] + s * d[1]];
      return a[0] <= b[0] ? [a, b] : [b, a];
    };
    var L = line(w, 0), Lp = line(w, 1), Lm = line(w, -1), G = line(f, 0);
    var seg = function (l) { return { x: [l[0][0], l[1][0]], y: [l[0][1], l[1][1]], spanGaps: true }; };
    TD.chart(host, { title: 'max margin: the data, the hard-margin separator (LDP/NNLS) and GD\'s final direction', xLabel: 'x1',
      id: id(), logToggle: false }).set([
      { label: 'y = +1', x: pos.map(function (p) { return p[0]; }), y: pos.map(function (p) { return p[1]; }), style: 'points' },
      { label: 'y = -1', x: neg.map(function (p) { return p[0]; }), y: neg.map(function (p) { return p[1]; }), style: 'points' },
      Object.assign({ label: 'max-margin separator', points: false }, seg(L)),
      Object.assign({ label: 'margin', dash: [4, 4], points: false }, seg(Lp)),
      Object.assign({ label: 'margin ', dash: [4, 4], points: false }, seg(Lm)),
      Object.assign({ label: 'GD separator (last step)', dash: [2, 2], points: false }, seg(G))]);
    return true;
  }

  var BY_NAME = { 'reliability.json': reliability, 'igr.json': igr, 'filters.json': filters,
    'marglik.json': marglik, 'max_margin.json': maxMargin };

  TD.ch8 = {
    render: function (name, obj, host) {
      var f = BY_NAME[name];
      if (!f || !obj || typeof obj !== 'object' || !TD.chart) return false;
      try { return f(obj, host); } catch (e) { return false; }
    }
  };
})();
