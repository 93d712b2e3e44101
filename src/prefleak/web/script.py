"""The page script and style sheet of the web view, served as ``/static/web.js`` and
``/static/web.css`` (Python strings, so that they ship in the wheel with no package-data setup).

The script reads the page's JSON block (``#page-data``, a ``prefleak.explain/1`` document) and
draws the charts with plotly.js. plotly.js reads a little HTML (``<b>``, ``<a>``, ``<br>``,
entities) in every label, so every name goes through ``label()`` first.
"""

SCRIPT = r"""'use strict';
(function () {
  var block = document.getElementById('page-data');
  if (!block || !window.Plotly) { return; }
  var doc = JSON.parse(block.textContent);
  var CONFIG = {displaylogo: false, responsive: true};
  var COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];

  function label(value) {
    return String(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function when(iso) { return iso.replace('T', ' ').replace(/(Z|[+-]\d\d:\d\d)$/, ''); }
  function scaled(value, factor) { return value === null ? null : value * factor; }
  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return 'rgba(' + (n >> 16) + ',' + ((n >> 8) & 255) + ',' + (n & 255) + ',' + alpha + ')';
  }
  function empty(id, message) {
    var p = document.createElement('p');
    p.className = 'empty';
    p.textContent = message;
    document.getElementById(id).appendChild(p);
  }
  function draw(id, traces, layout) {
    var base = {margin: {t: 30, r: 20, b: 60, l: 60}, hovermode: 'closest',
                legend: {orientation: 'h', y: -0.25, traceorder: 'normal'}};
    Plotly.newPlot(id, traces, Object.assign(base, layout), CONFIG);
  }

  // A line per series with its 95 % interval as a band; significant windows as filled markers.
  function banded(name, color, x, y, low, high, significant) {
    return [
      {x: x, y: high, mode: 'lines', line: {width: 0}, hoverinfo: 'skip', showlegend: false},
      {x: x, y: low, mode: 'lines', line: {width: 0}, fill: 'tonexty',
       fillcolor: rgba(color, 0.18), hoverinfo: 'skip', showlegend: false},
      {x: x, y: y, name: label(name), mode: 'lines+markers', line: {color: color},
       marker: {color: color, size: 8,
                symbol: significant.map(function (s) { return s ? 'circle' : 'circle-open'; })}}
    ];
  }

  // Change-detection marks: where each alarmed series started to shift and where it was caught.
  function changeMarks(subject) {
    var shapes = [], notes = [];
    doc.changes.forEach(function (change) {
      if (change.subject !== subject || !change.alarm) { return; }
      [['started_at', 'dash', 'shift starts'], ['detected_at', 'solid', 'alarm']].forEach(
        function (mark) {
          if (!change[mark[0]]) { return; }
          var x = when(change[mark[0]]);
          shapes.push({type: 'line', xref: 'x', yref: 'paper', x0: x, x1: x, y0: 0, y1: 1,
                       line: {color: '#d62728', dash: mark[1], width: 1.5}});
          notes.push({x: x, y: 1, xref: 'x', yref: 'paper', text: mark[2], showarrow: false,
                      yanchor: 'top', xanchor: 'left', font: {color: '#d62728', size: 10}});
        });
    });
    return {shapes: shapes, annotations: notes};
  }

  function plsChart() {
    var traces = [];
    doc.timeline.pls.forEach(function (series, k) {
      var w = series.windows;
      var pick = function (key) { return w.map(function (p) { return scaled(p[key], 100); }); };
      var name = series.judge_i + ' vs ' + series.judge_j + ': ' + series.student_i + ' / ' +
        series.student_j + (doc.subject.benchmark ? '' : ' (' + series.benchmark + ')');
      traces = traces.concat(banded(name, COLORS[k % COLORS.length],
        w.map(function (p) { return when(p.window); }), pick('pls'), pick('ci_low'),
        pick('ci_high'), w.map(function (p) { return p.significant; })));
    });
    if (!traces.length) { empty('chart-pls', 'No PLS row involves this subject.'); return; }
    var layout = changeMarks('pls'), points = [];
    doc.timeline.pls.forEach(function (series) { points = points.concat(series.windows); });
    if (points.every(function (p) { return p.pls === null; })) {
      layout.annotations.push({text: label('PLS undefined in every window: ' + points[0].undefined),
                               xref: 'paper', yref: 'paper', x: 0.5, y: 0.5, showarrow: false});
    }
    draw('chart-pls', traces, Object.assign(
      {title: {text: 'PLS per window (%, 95 % CI)'}, yaxis: {zeroline: true}}, layout));
  }

  function leakageChart() {
    var traces = [];
    Object.keys(doc.timeline.leakage).forEach(function (kind, k) {
      var w = doc.timeline.leakage[kind];
      var ci = function (i) {
        return w.map(function (p) { return p.effect_pp_ci ? p.effect_pp_ci[i] : null; });
      };
      traces = traces.concat(banded(kind, COLORS[k % COLORS.length],
        w.map(function (p) { return when(p.window); }),
        w.map(function (p) { return p.effect_pp; }), ci(0), ci(1),
        w.map(function (p) { return p.significant; })));
    });
    if (!traces.length) { empty('chart-leakage', 'No relation kind to estimate.'); return; }
    draw('chart-leakage', traces, Object.assign(
      {title: {text: 'Leakage effect per window (win-rate points, 95 % CI)'}},
      changeMarks('leakage')));
  }

  // judge -> ... -> candidate, from the relation's path steps (which read candidate first).
  var STEPS = [/^ trained on (.+) \(share [^()]*\)$/, /^ generated by (.+)$/,
               /^ fine-tuned from (.+)$/, /^ descends from the weights of (.+), in (\S+ .+)$/,
               /^ is in (\S+ .+)$/];
  function chain(relation) {
    var nodes = [relation.candidate], current = relation.candidate;
    relation.path.forEach(function (step) {
      if (step.indexOf(current) !== 0) { return; }
      var rest = step.slice(current.length);
      STEPS.some(function (pattern) {
        var m = rest.match(pattern);
        if (!m) { return false; }
        nodes = nodes.concat(m.slice(1));
        current = nodes[nodes.length - 1];
        return true;
      });
    });
    if (nodes[nodes.length - 1] !== relation.judge) { nodes.push(relation.judge); }
    return nodes.reverse();
  }

  function lineageChart() {
    var relations = doc.relations;
    if (!relations.length) { empty('chart-lineage', 'No lineage relates the judges.'); return; }
    var traces = [], arrows = [], nx = [], ny = [], ntext = [], ncolor = [];
    relations.forEach(function (relation, row) {
      var nodes = chain(relation), y = -row;
      var inferred = relation.source === 'inferred';
      var xs = nodes.map(function (_, i) { return i; });
      traces.push({x: xs, y: nodes.map(function () { return y; }), mode: 'lines',
                   hoverinfo: 'skip', showlegend: false,
                   line: {color: inferred ? '#ff7f0e' : '#888', dash: inferred ? 'dot' : 'solid'}});
      for (var i = 1; i < nodes.length; i += 1) {
        arrows.push({x: i - 0.12, y: y, ax: i - 0.88, ay: y, xref: 'x', yref: 'y', axref: 'x',
                     ayref: 'y', text: '', showarrow: true, arrowhead: 2, arrowcolor: '#888'});
      }
      nodes.forEach(function (node, i) {
        nx.push(i); ny.push(y);
        var last = i === nodes.length - 1;
        ntext.push(label(node) + (last ? '<br>' + label(relation.kind) +
          (inferred ? ' (inferred)' : '') + ' ' + Math.round(100 * relation.share) + '%' : ''));
        ncolor.push(i === 0 ? '#1f77b4' : (last ? '#2ca02c' : '#bbb'));
      });
    });
    traces.push({x: nx, y: ny, mode: 'markers+text', text: ntext, textposition: 'top center',
                 hoverinfo: 'text', marker: {size: 14, color: ncolor}, showlegend: false});
    draw('chart-lineage', traces, {
      title: {text: 'judge → data → candidate'}, annotations: arrows,
      height: Math.max(260, 90 * relations.length + 80),
      xaxis: {visible: false, range: [-0.5, Math.max.apply(null, nx) + 0.5]},
      yaxis: {visible: false, range: [-relations.length + 0.5, 0.7]}});
  }

  function winRateChart() {
    var x = [], related = [], other = [], relatedBy = [], otherBy = [];
    doc.rows.forEach(function (row) {
      var wr = row.win_rates;
      if (!wr) { return; }
      var where = doc.subject.benchmark ? '' : ' on ' + row.benchmark;
      x.push(label(row.student_i + where), label(row.student_j + where));
      related.push(100 * wr.ii, 100 * wr.jj);
      other.push(100 * wr.ij, 100 * wr.ji);
      relatedBy.push(label(row.judge_i), label(row.judge_j));
      otherBy.push(label(row.judge_j), label(row.judge_i));
    });
    if (!x.length) { empty('chart-winrates', 'No PLS row with win rates.'); return; }
    draw('chart-winrates', [
      {type: 'bar', name: 'judge related to the candidate', x: x, y: related,
       hovertext: relatedBy, marker: {color: '#d62728'}},
      {type: 'bar', name: 'the other judge', x: x, y: other, hovertext: otherBy,
       marker: {color: '#1f77b4'}}
    ], {barmode: 'group', title: {text: 'Win rate of each candidate (%) by judge'},
        yaxis: {range: [0, 100]}});
  }

  [plsChart, leakageChart, lineageChart, winRateChart].forEach(function (chart) { chart(); });
})();
"""

STYLE = """body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #263238; color: #eceff1; padding: 8px 16px; }
header a { color: #fff; font-weight: 600; text-decoration: none; }
main { padding: 8px 16px 32px; max-width: 1200px; }
h1 { font-size: 1.4em; overflow-wrap: anywhere; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #f5f5f5; }
tr.alert td { background: #fdecea; }
.meta { color: #666; }
.verdict { padding: 8px 12px; border-left: 4px solid #999; background: #f5f5f5; }
.verdict.significant { border-color: #d62728; background: #fdecea; }
.error { color: #b71c1c; }
.chart { min-height: 320px; }
.empty { color: #666; font-style: italic; }
"""
