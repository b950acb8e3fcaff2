/* common.js: shared helpers for the tdlab dashboard: API calls (with an optional bearer
 * token), formatting, non-finite metric decoding, small DOM helpers. No framework; every
 * page script uses the global `TD` namespace defined here. Nothing here may throw at load. */
(function () {
  'use strict';
  var TD = (window.TD = window.TD || {});
  var TOKEN_KEY = 'tdlab_token';

  /* ---- DOM ---- */
  TD.$ = function (sel, root) { return (root || document).querySelector(sel); };
  TD.$$ = function (sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); };
  /* el('div', {class: 'x', onclick: f}, child, 'text', ...): create an element. */
  TD.el = function (tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v == null || v === false) return;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'html') e.innerHTML = v;
        else if (k.slice(0, 2) === 'on' && typeof v === 'function') e.addEventListener(k.slice(2), v);
        else if (k === 'style' && typeof v === 'object') Object.assign(e.style, v);
        else e.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) TD.append(e, arguments[i]);
    return e;
  };
  TD.append = function (parent, c) {
    if (c == null || c === false) return parent;
    if (Array.isArray(c)) { c.forEach(function (x) { TD.append(parent, x); }); return parent; }
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    return parent;
  };
  TD.clear = function (e) { while (e && e.firstChild) e.removeChild(e.firstChild); return e; };
  TD.qs = function (name) {
    try { return new URLSearchParams(window.location.search).get(name); } catch (e) { return null; }
  };

  /* ---- API ---- */
  TD.token = function () { try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } };
  TD.setToken = function (t) { try { if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ } };

  /* TD.api(path, {method, body}) -> Promise of parsed JSON. Rejects with an Error carrying
   * .status and .body (the server's {"error": {...}} when there is one). */
  TD.api = function (path, opts) {
    opts = opts || {};
    var headers = { 'Accept': 'application/json' };
    var tok = TD.token();
    if (tok) headers['Authorization'] = 'Bearer ' + tok;
    var init = { method: opts.method || 'GET', headers: headers, cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (txt) {
        var data = null;
        if (txt) { try { data = JSON.parse(txt); } catch (e) { data = null; } }
        if (!r.ok) {
          var msg = 'HTTP ' + r.status;
          var fld = null;
          if (data && data.error) {
            if (typeof data.error === 'string') msg = data.error;
            else {
              msg = data.error.message || data.error.code || msg;
              fld = data.error.field || null;
            }
          }
          var err = new Error(msg + (fld ? ' (' + fld + ')' : ''));
          err.status = r.status;
          err.body = data;
          if (r.status === 401 || r.status === 403) TD.showTokenBar();
          throw err;
        }
        if (data === null && txt) throw new Error('invalid JSON from ' + path);
        return data;
      });
    });
  };

  /* A small bar in the header that asks for the bearer token after a 401/403. */
  TD.showTokenBar = function () {
    if (TD.$('#token-bar')) return;
    var input = TD.el('input', { type: 'password', placeholder: 'API token', id: 'token-input', autocomplete: 'off' });
    var bar = TD.el('div', { id: 'token-bar', class: 'token-bar' },
      'This server needs a token for that request. ', input,
      TD.el('button', { onclick: function () { TD.setToken(input.value.trim()); bar.remove(); } }, 'Save'),
      TD.el('button', { class: 'secondary', onclick: function () { TD.setToken(''); bar.remove(); } }, 'Forget token'));
    var main = TD.$('main') || document.body;
    main.insertBefore(bar, main.firstChild);
  };

  /* ---- metric values ---- */
  /* TD.num(v): a metric value from the API as a finite number, or null. The server encodes
   * non-finite values as the strings "NaN", "Infinity" and "-Infinity" (DESIGN.md). */
  TD.num = function (v) {
    if (typeof v === 'number') return isFinite(v) ? v : null;
    if (typeof v === 'string' && v !== '' && !/^[+-]?(nan|inf(inity)?)$/i.test(v)) {
      var x = Number(v);
      return isFinite(x) ? x : null;
    }
    return null;
  };
  TD.isNonFinite = function (v) {
    if (typeof v === 'number') return !isFinite(v);
    return typeof v === 'string' && /^[+-]?(nan|inf(inity)?)$/i.test(v);
  };

  /* ---- formatting ---- */
  TD.fmt = function (v, digits) {
    if (v == null) return '—';
    if (typeof v === 'string') return v;
    if (typeof v === 'boolean') return v ? 'true' : 'false';
    if (typeof v !== 'number') { try { return JSON.stringify(v); } catch (e) { return String(v); } }
    if (!isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential((digits || 4) - 1).replace(/\.?0+e/, 'e');
    return String(Number(v.toPrecision(digits || 4)));
  };
  /* compact tick labels: 2e5, 1.5e-4, 0.25, 1200 */
  TD.fmtAxis = function (v) {
    if (v == null || typeof v !== 'number' || !isFinite(v)) return '';
    if (v === 0) return '0';
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) {
      var e = Math.floor(Math.log10(a) + 1e-9);
      var m = Number((v / Math.pow(10, e)).toPrecision(3));
      if (Math.abs(m) >= 10) { m /= 10; e += 1; }
      return m + 'e' + e;
    }
    return String(Number(v.toPrecision(4)));
  };
  TD.fmtBytes = function (n) {
    if (typeof n !== 'number' || !isFinite(n)) return '';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  };
  TD.parseTime = function (s) {
    if (!s) return null;
    var t = Date.parse(s);
    return isFinite(t) ? t : null;
  };
  TD.ago = function (s) {
    var t = TD.parseTime(s);
    if (t == null) return '';
    var d = (Date.now() - t) / 1000;
    if (d < 0) d = 0;
    if (d < 60) return Math.round(d) + 's ago';
    if (d < 3600) return Math.round(d / 60) + 'm ago';
    if (d < 86400) return Math.round(d / 3600) + 'h ago';
    return Math.round(d / 86400) + 'd ago';
  };
  TD.duration = function (a, b) {
    var t0 = TD.parseTime(a);
    if (t0 == null) return '';
    var t1 = b ? TD.parseTime(b) : Date.now();
    if (t1 == null) return '';
    var s = Math.max(0, (t1 - t0) / 1000);
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 120) return Math.round(s) + ' s';
    if (s < 7200) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  };

  TD.STATUSES = ['queued', 'running', 'succeeded', 'failed', 'diverged', 'cancelled', 'pruned', 'crashed'];
  TD.ACTIVE = { queued: 1, running: 1 };
  TD.statusBadge = function (s) {
    s = s == null ? 'unknown' : String(s);
    return TD.el('span', { class: 'badge status-' + s.replace(/[^a-z_]/gi, '') }, s);
  };
  /* progress {done,total} (or a number in [0,1]) -> bar element */
  TD.progressBar = function (p, status) {
    var done = 0, total = 0, frac = null;
    if (typeof p === 'number') frac = p;
    else if (p && typeof p === 'object') {
      done = Number(p.done) || 0; total = Number(p.total) || 0;
      if (total > 0) frac = done / total;
    }
    if (status === 'succeeded') frac = 1;
    var label = frac != null ? Math.round(Math.min(1, Math.max(0, frac)) * 100) + '%' :
      (done ? String(done) : '');
    if (total > 0 && status !== 'succeeded') label = done + ' / ' + total;
    var fill = TD.el('div', { class: 'fill' });
    fill.style.width = (frac == null ? 0 : Math.min(1, Math.max(0, frac)) * 100) + '%';
    return TD.el('div', { class: 'progress status-' + (status || ''), title: label }, fill,
      TD.el('span', { class: 'plabel' }, label));
  };

  /* jobs list response: array, {jobs:[...]}, {items:[...]} or {data:[...]} */
  TD.listOf = function (data, names) {
    if (Array.isArray(data)) return data;
    if (!data || typeof data !== 'object') return [];
    for (var i = 0; i < names.length; i++) if (Array.isArray(data[names[i]])) return data[names[i]];
    return [];
  };

  /* The job's sweep id, when the API tells it (field or a "sweep:<id>" tag). */
  TD.sweepOf = function (job) {
    if (!job) return null;
    if (job.sweep_id != null) return job.sweep_id;
    if (job.sweep != null && typeof job.sweep !== 'object') return job.sweep;
    if (job.sweep && job.sweep.id != null) return job.sweep.id;
    var tags = Array.isArray(job.tags) ? job.tags : [];
    for (var i = 0; i < tags.length; i++) {
      var m = /^sweep[:=](.+)$/.exec(String(tags[i]));
      if (m) return m[1];
    }
    return null;
  };

  /* Render a value as pretty JSON in a <pre>. */
  TD.prettyJSON = function (v) {
    var txt = JSON.stringify(v, null, 2);
    if (typeof txt !== 'string') return txt;
    // keep short lists of numbers and strings on one line: "hidden": [256, 256]
    return txt.replace(/\[\n\s*((?:-?[\d.eE+-]+|"[^"\n]*"|true|false|null)(?:,\n\s*(?:-?[\d.eE+-]+|"[^"\n]*"|true|false|null))*)\n\s*\]/g,
      function (m, inner) {
        var one = '[' + inner.split(/,\n\s*/).join(', ') + ']';
        return one.length <= 100 ? one : m;
      });
  };
  TD.jsonPre = function (v) {
    var txt;
    try { txt = TD.prettyJSON(v); } catch (e) { txt = String(v); }
    return TD.el('pre', { class: 'json' }, txt == null ? 'null' : txt);
  };

  /* Report an unexpected failure on the page (never re-thrown). */
  TD.showError = function (where, err) {
    var box = TD.$('#page-error');
    if (!box) return;
    box.hidden = false;
    box.textContent = (where ? where + ': ' : '') + (err && err.message ? err.message : String(err));
  };
  TD.hideError = function () { var box = TD.$('#page-error'); if (box) box.hidden = true; };

  window.addEventListener('error', function (ev) { TD.showError('script error', ev.error || ev.message); });
  window.addEventListener('unhandledrejection', function (ev) { TD.showError('unexpected', ev.reason); });
})();
