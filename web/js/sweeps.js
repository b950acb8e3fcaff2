/* sweeps.js: the sweeps list (sweeps.html): GET /api/v1/sweeps, refreshed every 5 s. */
(function () {
  'use strict';
  var TD = window.TD;
  function counts(s) {
    var c = s.counts || s.status_counts || {};
    if (Array.isArray(c)) { var o = {}; c.forEach(function (e) { if (e) o[e.status] = e.count; }); c = o; }
    var span = TD.el('span', { class: 'counts' });
    /* only the statuses that have children (the API lists every status, zeros included) */
    Object.keys(c).forEach(function (k) { if (k !== 'total' && Number(c[k]) !== 0) span.appendChild(TD.el('span', {}, TD.statusBadge(k), ' ', String(c[k]))); });
    if (c.total != null) span.appendChild(TD.el('span', { class: 'muted small' }, 'of ' + c.total));
    return span;
  }
  /* The fit in one line: "critical_batch: B_crit 499 [431, 577]", or its error. */
  function fitCell(s) {
    var f = s.fit;
    if (!f || typeof f !== 'object') return '';
    if (f.error) return TD.el('span', { class: 'muted small', title: String(f.error.message || f.error) }, (f.law || 'fit') + ': not yet');
    var ps = f.params && typeof f.params === 'object' ? f.params : {};
    var key = { critical_batch: 'B_crit', power_offset: 'alpha', chinchilla: 'alpha' }[f.law] || Object.keys(ps)[0];
    var p = ps[key];
    if (!p) return f.law || '';
    var v = typeof p === 'object' ? p.value : p, ci = typeof p === 'object' ? (p.ci95 || p.ci) : null;
    var txt = key + ' ' + TD.fmt(TD.num(v), 4) + (Array.isArray(ci) ? ' [' + TD.fmt(TD.num(ci[0]), 3) + ', ' + TD.fmt(TD.num(ci[1]), 3) + ']' : '');
    return TD.el('span', { class: 'small', title: (f.y || '') + ' vs ' + (f.x || '') }, TD.el('span', { class: 'muted' }, (f.law || '') + ': '), txt);
  }
  function load() {
    TD.api('/api/v1/sweeps').then(function (raw) {
      var list = TD.listOf(raw, ['sweeps', 'items', 'data']);
      var host = TD.clear(TD.$('#sweeps'));
      if (!list.length) { host.appendChild(TD.el('p', { class: 'muted' }, 'No sweeps yet.')); return; }
      var tb = TD.el('tbody');
      list.forEach(function (s) {
        if (!s || s.id == null) return;
        var href = 'sweep.html?id=' + encodeURIComponent(s.id);
        tb.appendChild(TD.el('tr', {}, TD.el('td', { class: 'num' }, TD.el('a', { href: href }, String(s.id))),
          TD.el('td', {}, TD.el('a', { href: href }, s.name || 'sweep #' + s.id)),
          TD.el('td', {}, TD.el('span', { class: 'kind' }, s.kind || '')),
          TD.el('td', {}, s.status ? TD.statusBadge(s.status) : ''),
          TD.el('td', {}, counts(s)),
          TD.el('td', {}, fitCell(s)),
          TD.el('td', { title: s.created_at || '' }, TD.ago(s.created_at))));
      });
      host.appendChild(TD.el('table', { class: 'data' }, TD.el('thead', {}, TD.el('tr', {},
        TD.el('th', { class: 'num' }, 'id'), TD.el('th', {}, 'name'), TD.el('th', {}, 'kind'), TD.el('th', {}, 'status'),
        TD.el('th', {}, 'children'), TD.el('th', {}, 'fit'), TD.el('th', {}, 'created'))), tb));
      TD.$('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      TD.hideError();
      setTimeout(load, 5000);
    }).catch(function (e) {
      var host = TD.clear(TD.$('#sweeps'));
      if (e.status === 404 || e.status === 405) host.appendChild(TD.el('p', { class: 'muted' }, 'This server has no sweeps endpoint yet.'));
      else { TD.showError('could not load sweeps', e); setTimeout(load, 5000); }
    });
  }
  load();
})();
