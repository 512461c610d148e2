// The fleet status page: polls the config service's API and renders it. Plain DOM, no framework;
// fleet data only ever reaches the page as text nodes and attribute values, never as markup.
const POLL_MS = 2000;
/** Points kept per sidecar for its sparklines: a few minutes of 5 s heartbeats. */
const HISTORY = 90;
/** Without a trace receiver (404), ask again only every this many polls. */
const TRACES_RECHECK = 15;
const TOKEN_KEY = 'sluice-token';
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
/** history: sidecar id -> { lastSeen, points: [{ rps, eps }] }. */
const history = new Map();
/** trace id -> its spans (a promise while loading); and which traces are open. */
const spans = new Map();
const expanded = new Set();
let tracesSkip = 0;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : String(v));
  el.append(...children.flat().filter((c) => c !== undefined && c !== null && c !== false).map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

const short = (s, n) => (s && s.length > n ? s.slice(0, n) : s || '—');
const rate = (n) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const ms = (n) => (n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n >= 10 ? n.toFixed(0) : n.toFixed(1)} ms`);
function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago` : new Date(iso).toLocaleString();
}

class Unauthorized extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const res = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(5000) });
  if (res.status === 401) throw new Unauthorized();
  return { status: res.status, body: res.ok ? await res.json() : null };
}

function askForToken() {
  const had = sessionStorage.getItem(TOKEN_KEY) !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('login-error').textContent = had ? 'That token was refused.' : '';
  if ($('login').hidden) {
    $('login').hidden = false;
    $('token').focus();
  }
  $('updated').textContent = 'waiting for a token';
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  $('login').hidden = true;
  poll();
});

// ---- the fleet ----

function renderSource(view) {
  const item = (term, value, title) => [h('dt', {}, term), h('dd', { title }, value)];
  $('source').replaceChildren(
    ...item('repo', view.repo),
    ...item('branch', view.branch),
    ...item('serving', view.serving ? short(view.serving.commit, 10) : 'no good commit yet', view.serving?.commit),
  );
  const banners = [];
  if (view.rejected) {
    banners.push(h('div', { class: 'banner bad' }, h('strong', {}, `Commit ${short(view.rejected.commit, 10)} rejected`), ` ${ago(view.rejected.at)}; the last good commit keeps being served.`, h('ul', {}, view.rejected.errors.slice(0, 10).map((e) => h('li', {}, e)))));
  }
  if (view.fetchError) banners.push(h('div', { class: 'banner warn' }, h('strong', {}, `Cannot fetch the repository (${view.fetchError.code})`), ` ${view.fetchError.message}`));
  $('banners').replaceChildren(...banners);
}

function sparkline(values, label, cls) {
  const w = 120;
  const hgt = 28;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('class', `spark ${cls}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const max = Math.max(1e-9, ...values);
  const step = w / (HISTORY - 1);
  const x0 = w - (values.length - 1) * step;
  // The baseline, so a chart with few points yet still reads as a chart.
  const axis = document.createElementNS(SVG, 'line');
  for (const [k, v] of [['class', 'axis'], ['x1', 0], ['x2', w], ['y1', hgt - 1], ['y2', hgt - 1]]) axis.setAttribute(k, String(v));
  svg.append(axis);
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`);
  if (pts.length > 0) {
    const area = document.createElementNS(SVG, 'polygon');
    area.setAttribute('points', `${x0.toFixed(1)},${hgt} ${pts.join(' ')} ${w},${hgt}`);
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(area, line);
  }
  return svg;
}

function policyStatus(s) {
  const versions = `applied ${short(s.applied.version, 10)}${s.desired ? `, desired ${short(s.desired.version, 10)}` : ''}`;
  if (s.lastError && (!s.desired || s.lastError.version === s.desired.version)) {
    return h('div', { class: 'policy' }, h('span', { class: 'badge bad' }, 'NACKed'), h('span', { class: 'muted', title: s.desired?.file }, versions), h('div', { class: 'nack', title: s.lastError.errors.join('\n') }, s.lastError.message));
  }
  const [cls, text] = s.inSync ? ['ok', 'in sync'] : s.pending ? ['warn', 'pending'] : ['warn', 'out of sync'];
  return h('div', { class: 'policy' }, h('span', { class: `badge ${cls}` }, text), h('span', { class: 'muted', title: s.desired?.file }, versions));
}

function sidecarCard(s) {
  const hist = history.get(s.id)?.points ?? [];
  const hl = s.health;
  const breakers = hl?.breakers ?? [];
  const metric = (label, value, values, cls) =>
    h('div', { class: 'metric' }, h('span', { class: 'label' }, label), h('span', { class: `value ${cls}${value ? '' : ' none'}` }, value === undefined ? '—' : rate(value)), values ? sparkline(values, `${label} history`, cls) : null);
  const extras = [
    ...(hl?.credits ?? []).map((c) => h('span', { class: 'chip', title: `credits from ${c.upstream}: available / granted, waiting` }, `credits ${c.upstream} ${c.available}/${c.granted}${c.waiting ? ` · ${c.waiting} waiting` : ''}`)),
    ...(hl?.budgets ?? []).map((b) => h('span', { class: 'chip', title: `retries the budget for ${b.upstream} would admit now` }, `budget ${b.upstream} ${Math.floor(b.available)}`)),
    hl && hl.budgetExhaustedTotal > 0 ? h('span', { class: 'chip warn' }, `${hl.budgetExhaustedTotal} retries refused`) : null,
  ];
  return h(
    'article',
    { class: `card${s.connected ? '' : ' gone'}`, 'data-sidecar': s.id },
    h(
      'div',
      { class: 'head' },
      h('span', { class: 'id', title: s.id }, s.id),
      h('span', { class: 'service muted' }, s.service || 'no service'),
      h('span', { class: `badge ${s.connected ? 'ok' : 'bad'}` }, s.connected ? 'connected' : 'disconnected'),
      hl ? h('span', { class: `badge ${hl.state === 'ready' ? 'plain' : 'warn'}` }, hl.state) : null,
    ),
    policyStatus(s),
    h('div', { class: 'metrics' }, metric('req/s', hl?.requestsPerSecond, hist.map((p) => p.rps), 'req'), metric('err/s', hl?.errorsPerSecond, hist.map((p) => p.eps), 'err'), metric('refused/s', hl?.refusalsPerSecond, null, 'ref')),
    h(
      'div',
      { class: 'breakers' },
      breakers.length === 0
        ? h('span', { class: 'muted' }, 'no circuit breakers')
        : breakers.map((b) => h('span', { class: `chip breaker ${b.state}`, 'data-breaker': `${b.upstream}/${b.route}`, 'data-state': b.state, title: `circuit breaker: ${b.state}` }, b.route ? `${b.upstream} /${b.route}` : b.upstream, h('b', {}, b.state.replace('_', '-')))),
    ),
    extras.some(Boolean) ? h('div', { class: 'extras' }, extras) : null,
    h('div', { class: 'seen muted', title: s.lastSeen }, `sluice ${s.sluiceVersion} · last seen ${ago(s.lastSeen)}`),
  );
}

function renderFleet(view) {
  renderSource(view);
  const ids = new Set(view.sidecars.map((s) => s.id));
  for (const id of history.keys()) if (!ids.has(id)) history.delete(id);
  for (const s of view.sidecars) {
    const hist = history.get(s.id) ?? { lastSeen: '', points: [] };
    history.set(s.id, hist);
    // One point per heartbeat, not per poll: the chart's x axis is the sidecar's own reports.
    if (s.connected && s.health && s.lastSeen !== hist.lastSeen) {
      hist.lastSeen = s.lastSeen;
      hist.points.push({ rps: s.health.requestsPerSecond, eps: s.health.errorsPerSecond });
      if (hist.points.length > HISTORY) hist.points.shift();
    }
  }
  const connected = view.sidecars.filter((s) => s.connected).length;
  $('count').textContent = `${connected} connected${view.sidecars.length > connected ? `, ${view.sidecars.length - connected} gone` : ''}`;
  $('sidecars').replaceChildren(...(view.sidecars.length === 0 ? [h('p', { class: 'empty muted' }, 'No sidecar has connected to this replica yet.')] : view.sidecars.map(sidecarCard)));
}

// ---- failed traces ----

function waterfall(list) {
  if (list.length === 0) return h('p', { class: 'muted' }, 'This trace has no spans any more.');
  const nano = (s) => {
    try {
      return BigInt(String(s.startTimeUnixNano));
    } catch {
      return BigInt(Date.parse(s.startTime)) * 1000000n;
    }
  };
  const t0 = list.reduce((m, s) => (nano(s) < m ? nano(s) : m), nano(list[0]));
  const startMs = (s) => Number(nano(s) - t0) / 1e6;
  const total = Math.max(1e-3, ...list.map((s) => startMs(s) + s.durationMs));
  const ids = new Set(list.map((s) => s.spanId));
  const children = new Map();
  for (const s of list) {
    const parent = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : '';
    children.set(parent, [...(children.get(parent) ?? []), s]);
  }
  const rows = [];
  const visit = (parent, depth) => {
    for (const s of (children.get(parent) ?? []).sort((a, b) => startMs(a) - startMs(b))) {
      const failed = s.status?.code === 2 || s.status?.code === 'STATUS_CODE_ERROR' || s.status?.code === 'ERROR';
      const bar = h('span', { class: `bar${failed ? ' failed' : ''}` });
      bar.style.left = `${(startMs(s) / total) * 100}%`;
      bar.style.width = `${Math.max(0.5, (s.durationMs / total) * 100)}%`;
      const name = h('span', { class: 'span-name', title: s.status?.message || s.name }, s.name, h('span', { class: 'muted' }, ` ${s.service} · ${String(s.kind).toLowerCase()}`));
      name.style.paddingLeft = `${depth * 14}px`;
      rows.push(h('div', { class: 'span-row' }, name, h('span', { class: 'track' }, bar), h('span', { class: 'dur' }, ms(s.durationMs))));
      if (rows.length < 500) visit(s.spanId, depth + 1);
    }
  };
  visit('', 0);
  return h('div', { class: 'waterfall' }, rows);
}

function traceDetail(id) {
  const box = h('div', { class: 'detail' }, h('p', { class: 'muted' }, 'loading spans…'));
  if (!spans.has(id)) spans.set(id, api(`/v1/traces/${encodeURIComponent(id)}`).then((r) => (r.status === 200 ? r.body.spans : Promise.reject(new Error(`HTTP ${r.status}`)))));
  spans.get(id).then(
    (list) => box.replaceChildren(waterfall(list)),
    (err) => {
      spans.delete(id);
      if (err instanceof Unauthorized) askForToken();
      box.replaceChildren(h('p', { class: 'bad' }, `could not load the spans: ${err.message}`));
    },
  );
  return box;
}

const details = new Map();
function renderTraces(result) {
  if (result.status === 404) {
    $('traces').replaceChildren(h('p', { class: 'empty muted' }, 'No trace receiver on this config service.'));
    return;
  }
  const traces = result.body?.traces ?? [];
  // Forget what belongs to traces no longer listed, so a tab left open for days stays small.
  const listed = new Set(traces.map((t) => t.traceId));
  for (const m of [expanded, details, spans]) for (const id of m.keys()) if (!listed.has(id)) m.delete(id);
  if (traces.length === 0) {
    $('traces').replaceChildren(h('p', { class: 'empty muted' }, 'No failed traces recently.'));
    return;
  }
  const items = traces.map((t) => {
    const open = expanded.has(t.traceId);
    const row = h(
      'button',
      { type: 'button', class: 'trace', 'aria-expanded': open ? 'true' : 'false', 'data-trace': t.traceId },
      h('span', { class: 'time muted' }, new Date(t.startTime).toLocaleTimeString()),
      h('code', { title: t.traceId }, short(t.traceId, 8)),
      h('span', { class: 'root' }, t.rootName),
      h('span', { class: 'services muted' }, t.services.join(' → ')),
      h('span', { class: 'dur' }, ms(t.durationMs)),
      h('span', { class: 'error bad', title: t.error ?? '' }, t.error ?? 'error'),
    );
    row.addEventListener('click', () => {
      if (expanded.delete(t.traceId)) details.delete(t.traceId);
      else expanded.add(t.traceId);
      renderTraces(result);
    });
    if (open && !details.has(t.traceId)) details.set(t.traceId, traceDetail(t.traceId));
    return h('li', {}, row, open ? details.get(t.traceId) : null);
  });
  $('traces').replaceChildren(h('ul', { class: 'traces' }, items));
}

// ---- the loop ----

async function poll() {
  clearTimeout(poll.timer);
  try {
    const fleet = await api('/v1/fleet');
    if (fleet.status !== 200) throw new Error(`the fleet API answered ${fleet.status}`);
    renderFleet(fleet.body);
    if (tracesSkip > 0) tracesSkip--;
    else {
      const traces = await api('/v1/traces?errored=true&limit=20');
      if (traces.status === 404) tracesSkip = TRACES_RECHECK;
      renderTraces(traces);
    }
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('updated').classList.remove('bad');
  } catch (err) {
    if (err instanceof Unauthorized) return askForToken();
    $('updated').textContent = `cannot reach the config service: ${err.message}`;
    $('updated').classList.add('bad');
  }
  poll.timer = setTimeout(poll, POLL_MS);
}

poll();
