/* jobs.js: the jobs list (index.html): filters by status, kind and tag (kept in the URL
 * hash), refreshes every 2 s, and a submit form whose params are prefilled from the kind's
 * schema defaults (GET /api/v1/kinds). */
(function () {
  'use strict';
  var TD = window.TD;
  var POLL_MS = 2000;
  var SUMMARY_PREF = ['test_acc', 'test_loss', 'train_loss', 'loss', 'sharpness', 'steps_to_target',
    'lambda_max', 'final_loss', 'b_simple'];
  var state = { kinds: [], timer: null, busy: false, selected: {} };

  /* ---------- kinds catalogue ---------- */

  /* adaptKinds(raw) -> [{name, doc, chapter, params: [{path, type, default, min, max, enum, doc}]}] */
  function adaptKinds(raw) {
    var list = TD.listOf(raw, ['kinds', 'items', 'data']);
    if (!list.length && raw && typeof raw === 'object' && !Array.isArray(raw)) {
      var src = raw.kinds && typeof raw.kinds === 'object' ? raw.kinds : raw;
      list = Object.keys(src).map(function (k) { var v = src[k] || {}; return Object.assign({ name: k }, v); });
    }
    return list.filter(function (k) { return k && k.name; }).map(function (k) {
      var ps = k.params || k.schema || k.parameters || [];
      if (!Array.isArray(ps) && typeof ps === 'object') {
        ps = Object.keys(ps).map(function (p) { return Object.assign({ path: p }, ps[p]); });
      }
      return { name: String(k.name), doc: k.doc || k.description || '', chapter: k.chapter, params: ps };
    });
  }
  function defaultValue(p) {
    var d = p['default'];
    if (d === undefined || d === null) return undefined;
    if (typeof d === 'string') {
      var isStr = /^str/i.test(p.type || '');
      try {
        var v = JSON.parse(d);
        if (!isStr || /^\s*"/.test(d)) return v;
      } catch (e) { /* a plain string */ }
    }
    return d;
  }
  function setPath(obj, path, val) {
    var parts = String(path).split('.');
    var o = obj;
    for (var i = 0; i < parts.length - 1; i++) {
      if (!o[parts[i]] || typeof o[parts[i]] !== 'object') o[parts[i]] = {};
      o = o[parts[i]];
    }
    o[parts[parts.length - 1]] = val;
  }
  function defaultsFor(kind) {
    var out = {};
    (kind.params || []).forEach(function (p) {
      if (!p || !p.path || /\[/.test(p.path)) return;
      var v = defaultValue(p);
      if (v !== undefined) setPath(out, p.path, v);
    });
    return out;
  }
  function currentKind() {
    var name = TD.$('#f-kind').value;
    return state.kinds.filter(function (k) { return k.name === name; })[0] || null;
  }
  function fillDefaults() {
    var k = currentKind();
    if (!k) return;
    TD.$('#f-params').value = JSON.stringify(defaultsFor(k), null, 2);
    TD.$('#kind-doc').textContent = (k.doc || '') + (k.chapter != null ? '  (chapter ' + k.chapter + ')' : '');
    var host = TD.clear(TD.$('#schema-doc'));
    var tb = TD.el('tbody');
    (k.params || []).forEach(function (p) {
      var range = (p.min != null || p.max != null) ? '[' + TD.fmt(p.min) + ', ' + TD.fmt(p.max) + ']' : '';
      var en = p['enum'] ? (Array.isArray(p['enum']) ? p['enum'].join(' | ') : String(p['enum'])) : '';
      tb.appendChild(TD.el('tr', {}, TD.el('td', { class: 'kind' }, p.path), TD.el('td', {}, p.type || ''),
        TD.el('td', {}, p['default'] === undefined || p['default'] === null ? '' : JSON.stringify(defaultValue(p))),
        TD.el('td', {}, en || range), TD.el('td', {}, p.doc || '')));
    });
    host.appendChild(TD.el('table', { class: 'data' }, TD.el('thead', {}, TD.el('tr', {},
      TD.el('th', {}, 'path'), TD.el('th', {}, 'type'), TD.el('th', {}, 'default'), TD.el('th', {}, 'allowed'), TD.el('th', {}, 'doc'))), tb));
  }
  function loadKinds() {
    return TD.api('/api/v1/kinds').then(function (raw) {
      state.kinds = adaptKinds(raw);
      var sel = TD.clear(TD.$('#f-kind'));
      state.kinds.forEach(function (k) { sel.appendChild(TD.el('option', { value: k.name }, k.name)); });
      var pref = state.kinds.some(function (k) { return k.name === 'train'; }) ? 'train' : (state.kinds[0] || {}).name;
      if (pref) sel.value = pref;
      fillDefaults();
      var q = TD.$('#q-kind'), cur = readHash().kind || '';
      state.kinds.forEach(function (k) { if (!TD.$('option[value="' + CSS.escape(k.name) + '"]', q)) q.appendChild(TD.el('option', { value: k.name }, k.name)); });
      q.value = cur;
    }).catch(function (e) { TD.$('#kind-doc').textContent = 'could not load kinds: ' + e.message; });
  }

  function submit(ev) {
    ev.preventDefault();
    var msg = TD.clear(TD.$('#submit-msg'));
    var params;
    try { params = JSON.parse(TD.$('#f-params').value || '{}'); } catch (e) {
      msg.appendChild(TD.el('span', { class: 'alert error' }, 'params are not valid JSON: ' + e.message));
      return;
    }
    var body = { kind: TD.$('#f-kind').value, params: params };
    var name = TD.$('#f-name').value.trim();
    if (name) body.name = name;
    var tags = TD.$('#f-tags').value.split(',').map(function (s) { return s.trim(); }).filter(Boolean);
    if (tags.length) body.tags = tags;
    var pr = TD.$('#f-priority').value.trim();
    if (pr !== '') body.priority = Number(pr);
    TD.api('/api/v1/jobs', { method: 'POST', body: body }).then(function (job) {
      var id = job && (job.id != null ? job.id : job.job && job.job.id);
      msg.appendChild(TD.el('span', { class: 'alert ok' }, 'submitted ',
        id != null ? TD.el('a', { href: 'job.html?id=' + encodeURIComponent(id) }, 'job #' + id) : ''));
      refresh();
    }).catch(function (e) {
      msg.appendChild(TD.el('span', { class: 'alert error' }, 'rejected: ' + e.message));
    });
  }

  /* ---------- list ---------- */

  function readHash() {
    var out = {};
    try { new URLSearchParams(location.hash.replace(/^#/, '')).forEach(function (v, k) { out[k] = v; }); } catch (e) { /* ignore */ }
    return out;
  }
  function writeHash() {
    var p = new URLSearchParams();
    ['status', 'kind', 'tag', 'limit', 'q', 'cols'].forEach(function (k) {
      var v = TD.$('#q-' + k).value.trim();
      if (v && !(k === 'limit' && v === '50')) p.set(k, v);
    });
    if (state.sweep) p.set('sweep', state.sweep);
    if (state.sort) p.set('sort', (state.sort.dir < 0 ? '-' : '') + state.sort.col);
    var h = p.toString();
    history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
  }
  function summaryText(s) {
    if (!s || typeof s !== 'object') return '';
    var keys = SUMMARY_PREF.filter(function (k) { return s[k] !== undefined && typeof s[k] !== 'object'; });
    if (!keys.length) keys = Object.keys(s).filter(function (k) { return typeof s[k] === 'number'; });
    return keys.slice(0, 3).map(function (k) {
      var v = TD.num(s[k]);
      return k + ' ' + (v == null ? String(s[k]) : TD.fmt(v, 4));
    }).join('  ');
  }
  function row(j) {
    var href = 'job.html?id=' + encodeURIComponent(j.id);
    var nameCell = TD.el('td', { class: 'name' }, TD.el('a', { href: href }, j.name || (j.kind || 'job') + ' #' + j.id));
    if (Array.isArray(j.tags)) j.tags.forEach(function (t) { nameCell.appendChild(TD.el('span', { class: 'tag' }, String(t))); });
    var err = j.error && typeof j.error === 'object' ? j.error.message : j.error;
    if (err) nameCell.appendChild(TD.el('div', { class: 'sub', title: String(err) }, String(err).slice(0, 120)));
    var sel = TD.el('input', { type: 'checkbox', class: 'sel', value: String(j.id), 'aria-label': 'select job ' + j.id });
    sel.checked = !!state.selected[j.id];
    sel.addEventListener('change', function () {
      if (sel.checked) state.selected[j.id] = 1; else delete state.selected[j.id];
      updateCompare();
    });
    return TD.el('tr', { 'data-id': j.id },
      TD.el('td', {}, sel),
      TD.el('td', { class: 'num' }, TD.el('a', { href: href }, String(j.id))),
      nameCell,
      TD.el('td', {}, TD.el('span', { class: 'kind' }, j.kind || '')),
      TD.el('td', {}, TD.statusBadge(j.status)),
      TD.el('td', {}, TD.progressBar(j.progress, j.status)),
      TD.el('td', { class: 'summary' }, summaryText(j.summary)),
      TD.el('td', { title: j.created_at || '' }, TD.ago(j.created_at)),
      TD.el('td', {}, j.started_at ? TD.duration(j.started_at, j.finished_at) : ''));
  }
  /* ---- extra columns (params or summary values) and sorting ---- */
  function extraCols() {
    return TD.$('#q-cols').value.split(',').map(function (c) { return c.trim(); }).filter(Boolean).slice(0, 8);
  }
  /* the value at a dotted path: summary.X in the summary, anything else in params */
  function pathValue(j, path) {
    if (path === 'id' || path === 'name' || path === 'kind' || path === 'status' || path === 'created_at') return j[path];
    if (path === 'duration') {
      var a = TD.parseTime(j.started_at), b = j.finished_at ? TD.parseTime(j.finished_at) : Date.now();
      return a ? b - a : null;
    }
    var v = path.indexOf('summary.') === 0 ? j.summary : j.params;
    var parts = path.indexOf('summary.') === 0 ? path.slice(8).split('.') : path.replace(/^params\./, '').split('.');
    for (var i = 0; i < parts.length && v != null; i++) v = typeof v === 'object' ? v[parts[i]] : undefined;
    return v;
  }
  function cmp(a, b) {
    var na = TD.num(a), nb = TD.num(b);
    if (a == null && b == null) return 0;
    if (a == null) return 1;
    if (b == null) return -1;
    if (na != null && nb != null) return na - nb;
    return String(a).localeCompare(String(b));
  }
  function renderHead() {
    var tr = TD.$('#jobs-head');
    TD.$$('th.extra', tr).forEach(function (th) { th.remove(); });
    extraCols().forEach(function (c) { tr.appendChild(TD.el('th', { class: 'extra num', 'data-sort': c }, c)); });
    TD.$$('th[data-sort]', tr).forEach(function (th) {
      var col = th.getAttribute('data-sort');
      var on = state.sort && state.sort.col === col;
      th.setAttribute('aria-sort', on ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
      if (!th.querySelector('button')) {
        var label = th.textContent;
        TD.clear(th).appendChild(TD.el('button', { type: 'button', class: 'sort', title: 'sort by ' + label }, label));
        th.querySelector('button').addEventListener('click', function () {
          state.sort = state.sort && state.sort.col === col ? { col: col, dir: -state.sort.dir } : { col: col, dir: 1 };
          writeHash();
          renderRows();
        });
      }
      th.querySelector('button').setAttribute('data-dir', on ? (state.sort.dir > 0 ? '▲' : '▼') : '');
    });
  }
  function renderRows() {
    renderHead();
    var jobs = (state.jobs || []).slice();
    if (state.sort) {
      var c = state.sort.col, d = state.sort.dir;
      jobs.sort(function (a, b) { return d * cmp(pathValue(a, c), pathValue(b, c)) || b.id - a.id; });
    }
    var cols = extraCols();
    var tb = TD.clear(TD.$('#jobs'));
    jobs.forEach(function (j) {
      if (!j || j.id == null) return;
      var tr = row(j);
      cols.forEach(function (col) {
        var v = pathValue(j, col), n = TD.num(v);
        tr.appendChild(TD.el('td', { class: 'num' }, v === undefined ? '' : n != null ? TD.fmt(n, 4) : typeof v === 'object' ? JSON.stringify(v) : String(v)));
      });
      tb.appendChild(tr);
    });
  }

  /* selection for the comparison page */
  function updateCompare() {
    var n = Object.keys(state.selected).length;
    var b = TD.$('#compare');
    b.disabled = n < 1;
    b.textContent = n ? 'Compare ' + n + ' selected' : 'Compare selected';
  }
  function bindCompare() {
    state.selected = state.selected || {};
    TD.$('#compare').addEventListener('click', function () {
      var ids = Object.keys(state.selected).sort(function (a, b) { return a - b; });
      if (ids.length) location.href = 'compare.html?jobs=' + ids.join(',');
    });
    TD.$('#sel-all').addEventListener('change', function (ev) {
      TD.$$('#jobs input.sel').forEach(function (cb) {
        cb.checked = ev.target.checked;
        if (cb.checked) state.selected[cb.value] = 1; else delete state.selected[cb.value];
      });
      updateCompare();
    });
  }
  function refresh() {
    if (state.busy) return;
    state.busy = true;
    clearTimeout(state.timer);
    var q = new URLSearchParams();
    ['status', 'kind', 'tag', 'limit', 'q'].forEach(function (k) {
      var v = TD.$('#q-' + k).value.trim();
      if (v) q.set(k, v);
    });
    if (state.sweep) q.set('sweep', state.sweep);
    TD.api('/api/v1/jobs?' + q.toString()).then(function (raw) {
      var jobs = TD.listOf(raw, ['jobs', 'items', 'data']);
      state.jobs = jobs;
      renderRows();
      TD.$('#jobs-empty').hidden = jobs.length > 0;
      var more = raw && !Array.isArray(raw) && (raw.next_cursor || raw.cursor || raw.next);
      TD.$('#jobs-more').hidden = !more;
      TD.$('#count').textContent = jobs.length + ' job' + (jobs.length === 1 ? '' : 's') + (more ? '+' : '');
      var ks = TD.$('#q-kind');
      jobs.forEach(function (j) {
        if (j.kind && !TD.$('option[value="' + CSS.escape(j.kind) + '"]', ks)) ks.appendChild(TD.el('option', { value: j.kind }, j.kind));
      });
      TD.$('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      TD.hideError();
    }).catch(function (e) {
      var lim = TD.$('#q-limit');
      if (e.status === 400 && lim.value !== '50') { lim.value = '50'; writeHash(); }  // the server caps limit
      TD.showError('could not load jobs', e);
    }).then(function () {
      state.busy = false;
      state.timer = setTimeout(tick, POLL_MS);
    });
  }
  function tick() {
    if (document.hidden) { state.timer = setTimeout(tick, POLL_MS); return; }
    refresh();
  }
  function health() {
    fetch('/healthz', { cache: 'no-store' }).then(function (r) { return r.ok ? r.json() : null; }).then(function (h) {
      if (!h || typeof h !== 'object') return;
      var parts = [];
      var depth = h.queue_depth != null ? h.queue_depth : (h.queue && h.queue.depth);
      if (depth != null) parts.push('queue ' + depth);
      if (h.workers != null) parts.push((typeof h.workers === 'object' ? JSON.stringify(h.workers) : h.workers) + ' workers');
      TD.$('#health').textContent = parts.join(' · ');
    }).catch(function () { /* optional */ });
  }

  function init() {
    var sel = TD.$('#q-status');
    TD.STATUSES.forEach(function (s) { sel.appendChild(TD.el('option', { value: s }, s)); });
    var h = readHash();
    if (h.kind) TD.$('#q-kind').appendChild(TD.el('option', { value: h.kind }, h.kind));
    ['status', 'kind', 'tag', 'limit', 'q', 'cols'].forEach(function (k) { if (h[k]) TD.$('#q-' + k).value = h[k]; });
    if (h.sort) state.sort = { col: h.sort.replace(/^-/, ''), dir: h.sort[0] === '-' ? -1 : 1 };
    bindCompare();
    TD.$('#q-cols').addEventListener('change', function () { writeHash(); renderRows(); });
    TD.$('#q-q').addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { writeHash(); refresh(); } });
    TD.$('#q-q').addEventListener('change', function () { writeHash(); refresh(); });
    if (h.sweep) {
      state.sweep = h.sweep;
      var chip = TD.$('#q-sweep');
      chip.hidden = false;
      TD.append(chip, [TD.el('a', { href: 'sweep.html?id=' + encodeURIComponent(h.sweep) }, 'sweep ' + h.sweep), ' ',
        TD.el('button', { class: 'secondary', type: 'button', title: 'show all jobs', onclick: function () {
          state.sweep = null; chip.hidden = true; writeHash(); refresh(); } }, '×')]);
    }
    ['status', 'kind', 'limit'].forEach(function (k) {
      TD.$('#q-' + k).addEventListener('change', function () { writeHash(); refresh(); });
    });
    var tagTimer = null;
    TD.$('#q-tag').addEventListener('input', function () {
      clearTimeout(tagTimer);
      tagTimer = setTimeout(function () { writeHash(); refresh(); }, 300);
    });
    TD.$('#f-kind').addEventListener('change', fillDefaults);
    TD.$('#f-defaults').addEventListener('click', fillDefaults);
    TD.$('#submit-form').addEventListener('submit', submit);
    refresh();
    loadKinds();
    health();
    setInterval(function () { if (!document.hidden) health(); }, 10000);
  }

  TD.jobs = { adaptKinds: adaptKinds, defaultsFor: defaultsFor };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
