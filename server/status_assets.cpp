// The status page's three files, served as they are. The script builds every
// element with textContent: slide ids and errors come from outside and are
// never parsed as HTML. The answers carry a Content-Security-Policy that
// allows only these files, the snapshot and the pictures.
#include "server/status.hpp"

namespace iaserve::server::status {

std::string_view page_html() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>iaserve status</title>
<link rel="stylesheet" href="status.css">
<script src="status.js" defer></script>
</head>
<body>
<header>
  <h1>iaserve</h1>
  <span id="server"></span>
  <span id="updated" class="muted">loading&hellip;</span>
</header>
<main>
  <section id="queue-section">
    <h2>Queue <span id="queue-dir" class="muted"></span></h2>
    <div id="queue-error" class="error" hidden></div>
    <div id="counts" class="counts"></div>
  </section>
  <section>
    <h2>Processes <span class="muted">(leases in the queue folder)</span></h2>
    <table id="processes"><thead><tr><th>process</th><th>host</th><th>pid</th><th>heartbeat</th><th>running</th><th></th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Running</h2>
    <table id="active"><thead><tr><th>slide</th><th>app</th><th>worker</th><th>queued</th><th>attempts</th><th></th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Latest finished</h2>
    <table id="recent"><thead><tr><th></th><th>slide</th><th>app</th><th>state</th><th>result</th><th>seconds</th><th>host</th><th>finished</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<footer class="muted">Updates every 2 s from <a href="status.json">status.json</a> &middot; <a href="metrics">metrics</a></footer>
</body>
</html>
)HTML";
}

std::string_view page_css() {
  return R"CSS(:root { --fg: #1d2630; --muted: #6b7785; --line: #e3e7ec; --accent: #2d6cdf;
  --ok: #1e8e3e; --bad: #c5221f; --warn: #b06000; }
body { font: 14px/1.4 system-ui, sans-serif; color: var(--fg); margin: 0; background: #f7f8fa; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .8em 1.5em; background: #fff;
  border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0; color: var(--accent); }
h2 { font-size: 15px; margin: 1.4em 0 .5em; }
main { padding: 0 1.5em 1em; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .2em 1em 1em; margin-top: 1em; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-weight: 600; color: var(--muted); border-bottom: 1px solid var(--line); padding: .3em .5em; }
td { border-bottom: 1px solid var(--line); padding: .35em .5em; vertical-align: middle; }
td.empty { color: var(--muted); font-style: italic; }
.muted { color: var(--muted); font-size: 13px; }
.counts { display: flex; gap: 1em; flex-wrap: wrap; }
.count { border: 1px solid var(--line); border-radius: 6px; padding: .5em 1em; min-width: 6em; }
.count b { display: block; font-size: 22px; }
.state { font-weight: 600; }
.state.done { color: var(--ok); } .state.failed { color: var(--bad); } .state.cancelled { color: var(--warn); }
.stale { color: var(--bad); font-weight: 600; }
.error { color: var(--bad); font-weight: 600; margin: .5em 0; }
img.thumb { height: 56px; max-width: 96px; object-fit: contain; border: 1px solid var(--line); background: #fff; }
td.pics a { margin-right: 4px; }
td.slide { font-family: ui-monospace, monospace; word-break: break-all; }
footer { padding: 0 1.5em 1.5em; }
)CSS";
}

std::string_view page_js() {
  return R"JS('use strict';
// Every value from the snapshot goes into the page as text, never as HTML.
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function ago(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 1) return 'now';
  if (seconds < 90) return Math.round(seconds) + ' s ago';
  if (seconds < 5400) return Math.round(seconds / 60) + ' min ago';
  return Math.round(seconds / 3600) + ' h ago';
}
function since(iso, now) {
  if (!iso) return '';
  return ago((Date.parse(now) - Date.parse(iso)) / 1000);
}
function fill(id, rows, columns, empty) {
  const body = document.querySelector('#' + id + ' tbody');
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el('tr');
    const td = el('td', empty, 'empty');
    td.colSpan = columns;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el('tr');
    for (const c of cells) tr.append(c instanceof Node ? c : el('td', c));
    body.append(tr);
  }
}
function pictures(job) {
  const td = el('td', null, 'pics');
  for (const [url, label] of [[job.overlay, 'overlay'], [job.thumbnail, 'thumbnail']]) {
    if (!url) continue;
    const a = el('a');
    a.href = url;
    a.title = label;
    const img = el('img', null, 'thumb');
    img.src = url;
    img.alt = label + ' of ' + job.slideId;
    a.append(img);
    td.append(a);
    break;  // the overlay when there is one, else the thumbnail
  }
  return td;
}
function render(s) {
  const srv = s.server;
  document.getElementById('server').textContent =
    srv.host + ' pid ' + srv.pid + ' \u00b7 version ' + srv.softwareVersion + ' \u00b7 API ' + srv.apiVersion +
    ' \u00b7 up ' + ago(srv.uptimeSeconds).replace(' ago', '') + ' \u00b7 apps: ' +
    srv.apps.map(a => a.displayName + ' (' + a.route + ')').join(', ');
  document.getElementById('updated').textContent = 'updated ' + new Date(s.time).toLocaleTimeString();
  const q = s.queue;
  document.getElementById('queue-dir').textContent = q.dir;
  const err = document.getElementById('queue-error');
  err.hidden = q.ready;
  err.textContent = q.ready ? '' : 'queue folder unusable: ' + q.error;
  const counts = document.getElementById('counts');
  counts.replaceChildren();
  if (q.ready) {
    for (const k of ['pending', 'active', 'done', 'failed', 'cancelled']) {
      const box = el('div', null, 'count');
      box.append(el('b', q[k]), el('span', k));
      counts.append(box);
    }
    if (q.oldestPendingSeconds !== null) {
      const box = el('div', null, 'count');
      box.append(el('b', ago(q.oldestPendingSeconds).replace(' ago', '')), el('span', 'oldest pending'));
      counts.append(box);
    }
  }
  fill('processes', s.processes.map(p => [
    p.label || p.name, p.host, p.pid, ago(p.heartbeatAgeSeconds), p.activeJobs,
    el('td', p.self ? 'this server' : (p.stale ? 'stale lease' : ''), p.stale ? 'stale' : 'muted')]),
    6, 'no process holds a lease');
  fill('active', s.active.map(j => [
    el('td', j.slideId, 'slide'), j.appName || j.app, j.worker || (j.host ? j.host + ' (' + j.pid + ')' : ''),
    since(j.enqueued, s.time), j.attempts, j.cancelRequested ? 'cancelling' : '']),
    6, 'nothing running');
  fill('recent', s.recent.map(j => [
    pictures(j), el('td', j.slideId, 'slide'), j.appName || j.app, el('td', j.state, 'state ' + j.state),
    j.result || j.error || '', j.seconds !== undefined ? j.seconds.toFixed(1) : '', j.host || '',
    since(j.finished || j.enqueued, s.time)]),
    8, 'no finished jobs yet');
}
async function refresh() {
  try {
    const r = await fetch('status.json', {cache: 'no-store'});
    if (!r.ok) throw new Error('status.json: HTTP ' + r.status);
    render(await r.json());
  } catch (e) {
    document.getElementById('updated').textContent = 'not updated: ' + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
)JS";
}

}  // namespace iaserve::server::status
