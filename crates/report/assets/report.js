// actpatch report: draws each heatmap set (JSON in the page) as SVG, with a selector
// per facet that has more than one value and a tooltip per cell. No dependencies.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  // ColorBrewer RdBu: red for negative, white at 0, blue for positive (as the PNGs).
  var RDBU = [[103, 0, 31], [178, 24, 43], [214, 96, 77], [244, 165, 130], [253, 219, 199],
    [247, 247, 247], [209, 229, 240], [146, 197, 222], [67, 147, 195], [33, 102, 172], [5, 48, 97]];
  var tip = document.getElementById("tip");

  function color(v, limit) {
    if (v === null || !isFinite(v)) return "rgb(190,190,190)";
    var t = (Math.max(-1, Math.min(1, v / limit)) + 1) / 2 * (RDBU.length - 1);
    var i = Math.min(Math.floor(t), RDBU.length - 2), f = t - i, a = RDBU[i], b = RDBU[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); }).join(",") + ")";
  }

  function fmt(v) {
    if (v === null || !isFinite(v)) return "–";
    if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
    return v.toFixed(3);
  }

  function el(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function longest(ticks) {
    return ticks.reduce(function (m, t) { return Math.max(m, t.label.length); }, 1);
  }

  // One grid as an SVG heatmap.
  function draw(grid, plot) {
    var nr = grid.rows.length, nc = grid.cols.length;
    var limit = grid.values.reduce(function (m, v) { return v === null ? m : Math.max(m, Math.abs(v)); }, 0);
    if (!(limit > 0)) limit = 1;
    if (grid.value_label === "normalized logit diff" || grid.value_label === "mean normalized effect") limit = Math.max(limit, 1);
    var cw = Math.max(22, Math.min(56, Math.floor(900 / Math.max(nc, 1))));
    var ch = nr > 120 ? 5 : nr > 60 ? 9 : nr > 30 ? 14 : nr > 16 ? 20 : 28;
    var xl = longest(grid.cols), rotate = xl * 7 > cw;
    // Room for the row labels, and for the first rotated column label reaching left.
    var first = nc ? grid.cols[0].label.length * 7 * 0.72 - cw / 2 : 0;
    var left = Math.max(16 + 7 * longest(grid.rows) + 28, rotate ? first + 8 : 0), top = 40;
    var bottom = (rotate ? Math.ceil(xl * 7 * 0.72) + 14 : 22) + 34;
    var width = left + nc * cw + 110;
    var height = Math.max(top + nr * ch + bottom, top + Math.max(nr * ch, 120) + 30);
    tip.hidden = true;
    var svg = el("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": grid.title });
    el("text", { x: left, y: 22, "font-size": 16, "font-weight": 600, "class": "title" }, svg, grid.title);
    var cells = el("g", { "class": "cells" }, svg);
    var annotate = nr * nc <= 400 && ch >= 20 && cw >= 34;
    for (var r = 0; r < nr; r++) {
      for (var c = 0; c < nc; c++) {
        var i = r * nc + c, v = grid.values[i];
        var rect = el("rect", { x: left + c * cw, y: top + r * ch, width: cw, height: ch, fill: color(v, limit), "class": "cell", "data-r": r, "data-c": c }, cells);
        var iv = grid.intervals && grid.intervals[i];
        if (iv && iv[0] <= 0 && iv[1] >= 0) rect.setAttribute("fill-opacity", "0.35");
        if (annotate && v !== null) {
          el("text", { x: left + c * cw + cw / 2, y: top + r * ch + ch / 2 + 4, "font-size": 10, "text-anchor": "middle", "pointer-events": "none",
            fill: Math.abs(v) > 0.6 * limit ? "#fff" : "#000" }, cells, Math.abs(v) < 0.005 ? "0.00" : v.toFixed(2));
        }
      }
    }
    el("rect", { x: left, y: top, width: nc * cw, height: nr * ch, fill: "none", stroke: "#000" }, svg);
    var step = Math.max(1, Math.ceil(11 / ch));
    grid.rows.forEach(function (t, r) {
      if (r % step === 0) el("text", { x: left - 6, y: top + r * ch + ch / 2 + 4, "font-size": 11, "text-anchor": "end" }, svg, t.label);
    });
    grid.cols.forEach(function (t, c) {
      var x = left + c * cw + cw / 2, y = top + nr * ch + 14;
      el("text", rotate ? { x: x, y: y, "font-size": 11, "text-anchor": "end", transform: "rotate(-45 " + x + " " + y + ")" }
        : { x: x, y: y, "font-size": 11, "text-anchor": "middle" }, svg, t.label);
    });
    el("text", { x: left + nc * cw / 2, y: height - 8, "font-size": 13, "text-anchor": "middle" }, svg, grid.x_label);
    el("text", { x: 14, y: top + nr * ch / 2, "font-size": 13, "text-anchor": "middle", transform: "rotate(-90 14 " + (top + nr * ch / 2) + ")" }, svg, grid.y_label);
    colorbar(svg, left + nc * cw + 24, top, Math.max(nr * ch, 120), limit, grid.value_label);
    cells.addEventListener("mousemove", function (e) { show(grid, e); });
    cells.addEventListener("mouseleave", function () { tip.hidden = true; });
    plot.replaceChildren(svg);
  }

  function colorbar(svg, x, y, h, limit, label) {
    var id = "bar" + Math.random().toString(36).slice(2);
    var grad = el("linearGradient", { id: id, x1: 0, y1: 0, x2: 0, y2: 1 }, el("defs", {}, svg));
    RDBU.slice().reverse().forEach(function (c, i) {
      el("stop", { offset: (i / (RDBU.length - 1) * 100) + "%", "stop-color": "rgb(" + c.join(",") + ")" }, grad);
    });
    el("rect", { x: x, y: y, width: 16, height: h, fill: "url(#" + id + ")", stroke: "#000" }, svg);
    [[0, limit], [0.5, 0], [1, -limit]].forEach(function (p) {
      el("text", { x: x + 22, y: y + h * p[0] + 4, "font-size": 11 }, svg, (p[1] > 0 ? "+" : "") + p[1].toFixed(p[1] === 0 ? 0 : 2));
    });
    el("text", { x: x + 8, y: y + h + 18, "font-size": 11, "text-anchor": "middle" }, svg, label);
  }

  // The tooltip of the cell under the pointer: facets, row and column, value, interval.
  function show(grid, e) {
    var t = e.target;
    if (!t.classList || !t.classList.contains("cell")) return;
    var r = +t.getAttribute("data-r"), c = +t.getAttribute("data-c"), i = r * grid.cols.length + c;
    var lines = grid.facets.concat(grid.rows[r].hover, grid.cols[c].hover);
    lines.push([grid.value_label, fmt(grid.values[i])]);
    var iv = grid.intervals && grid.intervals[i];
    if (iv) lines.push(["95% interval", "[" + fmt(iv[0]) + ", " + fmt(iv[1]) + "]"]);
    tip.replaceChildren();
    lines.forEach(function (kv, n) {
      if (n) tip.appendChild(document.createTextNode("\n"));
      var b = document.createElement("b");
      b.textContent = kv[0] + ": ";
      tip.appendChild(b);
      tip.appendChild(document.createTextNode(kv[1]));
    });
    tip.hidden = false;
    var x = e.clientX + 14, y = e.clientY + 14;
    if (x + tip.offsetWidth > window.innerWidth) x = e.clientX - tip.offsetWidth - 14;
    if (y + tip.offsetHeight > window.innerHeight) y = e.clientY - tip.offsetHeight - 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  function facet(grid, key) {
    for (var i = 0; i < grid.facets.length; i++) if (grid.facets[i][0] === key) return grid.facets[i][1];
    return null;
  }

  // A set of grids with one selector per facet that has more than one value.
  function setup(box) {
    var set = JSON.parse(document.getElementById(box.getAttribute("data-source")).textContent);
    var grids = set.grids;
    if (!grids.length) { box.textContent = "No heatmaps."; return; }
    var keys = set.facets.slice();
    grids.forEach(function (g) { g.facets.forEach(function (f) { if (keys.indexOf(f[0]) < 0) keys.push(f[0]); }); });
    var choice = {};
    keys.forEach(function (k) { choice[k] = facet(grids[0], k); });
    var controls = document.createElement("div");
    controls.className = "controls";
    var selects = {};
    keys.forEach(function (k) {
      var values = [];
      grids.forEach(function (g) { var v = facet(g, k); if (v !== null && values.indexOf(v) < 0) values.push(v); });
      if (values.length < 2) return;
      var label = document.createElement("label");
      label.textContent = k;
      var select = document.createElement("select");
      select.setAttribute("data-facet", k);
      values.forEach(function (v) { var o = document.createElement("option"); o.value = v; o.textContent = v; select.appendChild(o); });
      select.value = choice[k];
      select.addEventListener("change", function () { choose(k, select.value); });
      label.appendChild(select);
      controls.appendChild(label);
      selects[k] = select;
    });
    var plot = document.createElement("div");
    plot.className = "plot";
    var note = document.createElement("p");
    note.className = "note";
    note.textContent = set.note;
    box.replaceChildren(controls, plot, note);

    // The grid that matches the choice best, the facet just changed first.
    function choose(key, value) {
      choice[key] = value;
      var best = null, score = -1;
      grids.forEach(function (g) {
        if (facet(g, key) !== value) return;
        var s = keys.filter(function (k) { return facet(g, k) === choice[k]; }).length;
        if (s > score) { best = g; score = s; }
      });
      if (!best) return;
      keys.forEach(function (k) { choice[k] = facet(best, k); if (selects[k]) selects[k].value = choice[k]; });
      box.setAttribute("data-shown", best.title);
      draw(best, plot);
    }
    choose(keys[0], choice[keys[0]]);
  }

  Array.prototype.forEach.call(document.querySelectorAll(".heatmaps"), setup);
})();
