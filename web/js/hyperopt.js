/* hyperopt.js: the job page's comparison of a finished `hyperopt` job with the random-search
 * SWEEP of the same budget (issue 15). The job's summary.random_sweep is the sweep's spec
 * (core/kinds/hyperopt.c); this view looks for a sweep named "hyperopt-random-of-job-<id>"
 * (GET /api/v1/sweeps), offers to submit it (POST /api/v1/sweeps with that name) when there
 * is none, and otherwise draws on one chart, against the budget spent (gradient and
 * Hessian-vector products of the training loss): the gradient run's best validation loss
 * (metric best_hyperopt) and the sweep's best-so-far over its finished trials in child order
 * (child i ends at the sum of the budgets of children 0..i). Hooked from job.js:
 * TD.hyperopt.render(job) after each job refresh. Nothing here may throw at load. */
(function () {
  'use strict';
  var TD = (window.TD = window.TD || {});
  var drawn = {};

  function sweepName(job) { return 'hyperopt-random-of-job-' + job.id; }

  function section() {
    var s = TD.$('#hyperopt-card');
    if (s) return s;
    s = TD.el('section', { id: 'hyperopt-card' },
      TD.el('h2', {}, 'Gradient-based tuning vs a random-search sweep of the same budget'),
      TD.el('div', { id: 'hyperopt-body', class: 'charts' }));
    var metrics = TD.$('#charts');
    var host = metrics && metrics.closest('section');
    if (host && host.parentNode) host.parentNode.insertBefore(s, host);
    else document.body.appendChild(s);
    return s;
  }

  /* the sweep of this job's name, or null */
  function findSweep(job) {
    return TD.api('/api/v1/sweeps?limit=200').then(function (d) {
      var list = (d && Array.isArray(d.sweeps)) ? d.sweeps : [];
      var hit = list.filter(function (s) { return s && s.name === sweepName(job); });
      return hit.length ? hit[0] : null;
    });
  }

  /* best-so-far of the finished children, x = cumulative budget in child order */
  function sweepCurve(sweep) {
    var ch = (Array.isArray(sweep.children) ? sweep.children : []).slice();
    ch.sort(function (a, b) { return a.idx - b.idx; });
    var x = [], y = [], spent = 0, best = Infinity;
    ch.forEach(function (c) {
      var s = c.summary || {};
      var b = TD.num(s.budget), v = TD.num(s.val_loss);
      if (c.status !== 'succeeded' || !isFinite(b)) return;
      spent += b;
      if (isFinite(v) && v < best) best = v;
      if (isFinite(best)) { x.push(spent); y.push(best); }
    });
    return { x: x, y: y, n: ch.length, done: x.length };
  }

  function draw(job, body, sweep) {
    var id = encodeURIComponent(job.id);
    Promise.all([TD.api('/api/v1/jobs/' + id + '/metrics?keys=best_hyperopt'),
      TD.api('/api/v1/sweeps/' + encodeURIComponent(sweep.id))]).then(function (r) {
      var raw = r[0] && r[0].metrics && typeof r[0].metrics === 'object' ? r[0].metrics : r[0];
      var m = raw && raw.best_hyperopt, sw = r[1];
      var hx = m && Array.isArray(m.step) ? m.step.map(Number) : [];
      var hy = m && Array.isArray(m.value) ? m.value.map(TD.num) : [];
      var c = sweepCurve(sw);
      var ch = TD.chart(body, { title: 'best validation loss against budget', xLabel: 'budget (gradients + HVPs)',
        yLabel: 'best L_val', wide: true, id: 'hyperopt-vs-sweep' });
      ch.set([{ label: 'hyperopt (gradient, ' + (job.summary.method || 'reversal') + ')', x: hx, y: hy },
        { label: 'random-search sweep ' + sw.id + ' (best so far)', x: c.x, y: c.y }],
      { note: c.done + ' of ' + c.n + ' trials finished; budget of the gradient run ' + TD.fmt(job.summary.budget, 6) });
      body.appendChild(TD.el('p', { class: 'small' }, TD.el('a', { href: 'sweep.html?id=' + encodeURIComponent(sw.id) }, 'sweep ' + sw.id),
        ' (' + (sw.status || '') + ')'));
    }).catch(function (e) { body.appendChild(TD.el('p', { class: 'muted' }, 'hyperopt comparison: ' + e.message)); });
  }

  function offer(job, body) {
    var spec = JSON.parse(JSON.stringify(job.summary.random_sweep));
    spec.name = sweepName(job);
    var msg = TD.el('span', { class: 'small' });
    var btn = TD.el('button', { id: 'hyperopt-run-sweep' }, 'Run the random-search sweep (' + spec.samples + ' trials)');
    btn.addEventListener('click', function () {
      btn.disabled = true;
      TD.api('/api/v1/sweeps', { method: 'POST', body: JSON.stringify(spec) }).then(function () {
        drawn[job.id] = false;
        render(job);
      }).catch(function (e) { btn.disabled = false; msg.textContent = e.message; });
    });
    body.appendChild(TD.el('p', {}, 'No sweep named ', TD.el('code', {}, spec.name), ' yet. ', btn, ' ', msg));
    body.appendChild(TD.el('details', { class: 'small' }, TD.el('summary', {}, 'the sweep spec (POST /api/v1/sweeps)'),
      TD.el('pre', {}, JSON.stringify(spec, null, 1))));
  }

  function render(job) {
    if (!job || job.kind !== 'hyperopt' || job.status !== 'succeeded' || !job.summary ||
        !job.summary.random_sweep) return;
    if (drawn[job.id]) return;
    drawn[job.id] = true;
    section();
    var body = TD.clear(TD.$('#hyperopt-body'));
    findSweep(job).then(function (sw) {
      if (sw) draw(job, body, sw);
      else offer(job, body);
    }).catch(function (e) { body.appendChild(TD.el('p', { class: 'muted' }, 'hyperopt comparison: ' + e.message)); });
  }

  TD.hyperopt = { render: render };
})();
