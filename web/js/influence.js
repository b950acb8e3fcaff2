/* influence.js: the job page's view of an `influence` job's influence.json: for every test
 * example, its Fashion-MNIST image and the top helpful and harmful training images with their
 * scores (score > 0: harmful; see the README's influence section). Pages without such an
 * artifact are untouched. Nothing here may throw at load. */
(function () {
  'use strict';
  var TD = (window.TD = window.TD || {});

  /* A 28 x 28 image from 1568 hex digits, drawn at 2x on a canvas. */
  function image(hex, title) {
    var c = TD.el('canvas', { width: 56, height: 56, class: 'inf-img', title: title || '' });
    if (typeof hex !== 'string' || hex.length !== 1568) return c;
    var ctx = c.getContext && c.getContext('2d');
    if (!ctx) return c;
    var img = ctx.createImageData(56, 56);
    for (var y = 0; y < 56; y++) {
      for (var x = 0; x < 56; x++) {
        var p = (y >> 1) * 28 + (x >> 1);
        var v = 255 - parseInt(hex.substr(2 * p, 2), 16);
        var o = 4 * (y * 56 + x);
        img.data[o] = img.data[o + 1] = img.data[o + 2] = v;
        img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return c;
  }

  function cell(item) {
    var sc = typeof item.score === 'number' ? item.score.toExponential(2) : String(item.score);
    return TD.el('figure', { class: 'inf-cell' }, image(item.pixels, '#' + item.index),
      TD.el('figcaption', { class: 'small' }, '#' + item.index + (item.label != null ? ' y=' + item.label : ''), TD.el('br'), sc));
  }

  /* TD.influence.render(host, data): draw the lists of influence.json `data` into `host`. */
  TD.influence = {
    render: function (host, data) {
      if (!data || !Array.isArray(data.tests)) return;
      var box = TD.el('div', { class: 'art-group', 'data-family': 'influence-images' },
        TD.el('h3', {}, 'influence: top helpful and harmful training examples'),
        TD.el('p', { class: 'small muted' }, data.convention || ''));
      data.tests.forEach(function (t) {
        var row = TD.el('div', { class: 'inf-row' });
        row.appendChild(TD.el('div', { class: 'inf-test' }, TD.el('div', { class: 'small' }, 'test #' + t.index + (t.label != null ? ' y=' + t.label : '')), image(t.pixels, 'test #' + t.index)));
        [['helpful', t.helpful], ['harmful', t.harmful]].forEach(function (l) {
          var g = TD.el('div', { class: 'inf-list' }, TD.el('div', { class: 'small muted' }, l[0]));
          (l[1] || []).forEach(function (it) { g.appendChild(cell(it)); });
          row.appendChild(g);
        });
        box.appendChild(row);
      });
      host.appendChild(box);
    }
  };
})();
