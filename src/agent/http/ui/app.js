// The cvserver dashboard (docs/http.md): plain JS, no build step, nothing fetched but this agent's API.
// Live state comes from /api/events/stream (server-sent events, read with fetch so the token travels
// in a header, never in a URL).

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const TOKEN_KEY = 'cvserver-token';
const RTT_POINTS = 240; // samples kept per link (about 2 minutes at the stream's pace)

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  who: null,
  status: null,
  statusAt: 0,
  events: [],
  rtt: new Map(), // "from>to#link" -> [{t, ms}]
  failovers: [], // GET /api/failovers, the newest 20
  stream: null,
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await r.json();
  } catch {}
  return { status: r.status, data };
}

// ---------- login ----------

function showLogin(error) {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = error || '';
  $('token').focus();
}

async function signIn(token) {
  state.token = token;
  const r = await api('GET', '/api/whoami');
  if (r.status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showLogin(r.data?.error || `sign-in failed (HTTP ${r.status})`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.who = r.data;
  $('who').textContent = `${r.data.name} (${r.data.scope}) via ${r.data.node}`;
  $('login').hidden = true;
  $('app').hidden = false;
  connect();
  loadFailovers();
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  void signIn($('token').value.trim());
});

$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.stream?.abort();
  showLogin('');
});

// ---------- live stream ----------

async function connect() {
  state.stream?.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  $('log-state').textContent = 'connecting';
  try {
    const r = await fetch('/api/events/stream', {
      headers: { authorization: `Bearer ${state.token}`, accept: 'text/event-stream' },
      signal: ctl.signal,
    });
    if (r.status === 401) return showLogin('the token was refused (revoked?)');
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    $('log-state').textContent = 'live';
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i = buf.indexOf('\n\n');
      while (i >= 0) {
        handleFrame(buf.slice(0, i));
        buf = buf.slice(i + 2);
        i = buf.indexOf('\n\n');
      }
    }
  } catch (err) {
    if (ctl.signal.aborted) return;
    $('log-state').textContent = `disconnected (${err.message}); retrying`;
  }
  if (state.stream === ctl && state.token) setTimeout(connect, 2000);
}

function handleFrame(frame) {
  let event = 'message';
  let data = '';
  for (const line of frame.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7);
    else if (line.startsWith('data: ')) data += line.slice(6);
  }
  if (!data) return;
  const value = JSON.parse(data);
  if (event === 'status') {
    state.status = value;
    state.statusAt = Date.now();
    recordRtt(value);
    render();
  } else if (event === 'log') {
    // A late event (another node flushed it later) goes in its place in time.
    state.events = [...state.events, ...value].sort((a, b) => a.at - b.at).slice(-300);
    renderEvents();
    if (value.some((e) => e.source === 'manager' && / -> expired|: healthy on /.test(e.text)))
      loadFailovers();
  }
}

setInterval(() => {
  if (!state.statusAt) return;
  const age = (Date.now() - state.statusAt) / 1000;
  $('freshness').textContent = age < 3 ? 'live' : `last update ${age.toFixed(0)} s ago`;
}, 1000);

// ---------- rendering ----------

function render() {
  const s = state.status;
  if (!s) return;
  $('cluster-name').textContent = `cvserver · ${s.cluster}`;
  const quorate = s.local.storeAgeMs !== null && s.local.storeAgeMs < 6000;
  badge('quorum', quorate ? 'quorate' : 'NO QUORUM', quorate ? 'ok' : 'bad');
  badge(
    'maintenance',
    s.maintenance ? `maintenance ON (${s.maintenance.by})` : 'maintenance off',
    s.maintenance ? 'warn' : 'ok',
  );
  badge('manager', s.manager ? `manager ${s.manager}` : 'no manager', s.manager ? 'ok' : 'bad');
  $('maintenance-toggle').textContent = s.maintenance ? 'End maintenance' : 'Maintenance';
  renderPicture(s);
  renderVservers(s);
  renderNodes(s);
  renderVolumes(s);
  renderRtt();
}

function badge(id, text, cls) {
  const b = $(id);
  b.textContent = text;
  b.className = `badge ${cls}`;
}

function nodeState(n) {
  if (n.lease !== 'alive') return 'down';
  if (n.fenced) return 'fenced';
  if (n.standby) return 'standby';
  return 'up';
}

/** Cells of the mesh's matrix for the pair a-b on one link: the worst of both directions. */
function linkState(matrix, a, b, link) {
  const cells = matrix.filter(
    (c) => c.link === link && ((c.from === a && c.to === b) || (c.from === b && c.to === a)),
  );
  const known = cells.filter((c) => c.state !== 'stale' && c.state !== 'unknown');
  if (known.length === 0) return { state: 'stale', rttMs: null };
  const down = known.some((c) => c.state !== 'up');
  const rtts = known.map((c) => c.rttMs).filter((x) => x !== null);
  return { state: down ? 'down' : 'up', rttMs: rtts.length ? Math.max(...rtts) : null };
}

const COLORS = { up: '#1a9b4b', down: '#d0312d', stale: '#9aa0a6' };

function renderPicture(s) {
  const pic = $('picture');
  pic.replaceChildren();
  const n = s.nodes.length;
  // A narrow screen (a phone) gets a narrower drawing, so its text stays readable.
  const narrow = pic.clientWidth > 0 && pic.clientWidth < 520;
  const W = narrow ? 380 : 600;
  const H = narrow ? 400 : 440;
  pic.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const cx = W / 2;
  const cy = H / 2 + 10;
  const rx = W / 2 - 82;
  const ry = H / 2 - 80;
  const pos = new Map();
  s.nodes.forEach((node, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    pos.set(node.name, { x: cx + rx * Math.cos(a), y: cy + ry * Math.sin(a) });
  });
  const matrix = s.mesh?.matrix ?? [];
  const links = Math.max(1, ...s.nodes.map((x) => x.addresses.length));
  // Links first, under the nodes.
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const a = s.nodes[i];
      const b = s.nodes[j];
      const pa = pos.get(a.name);
      const pb = pos.get(b.name);
      for (let l = 0; l < links; l++) {
        const off = (l - (links - 1) / 2) * 10;
        const dx = pb.x - pa.x;
        const dy = pb.y - pa.y;
        const len = Math.hypot(dx, dy) || 1;
        const ox = (-dy / len) * off;
        const oy = (dx / len) * off;
        const ls = linkState(matrix, a.name, b.name, l);
        const g = svg('g', { 'data-link': `${a.name}-${b.name}-${l}`, 'data-state': ls.state });
        g.append(
          svg('line', {
            x1: pa.x + ox,
            y1: pa.y + oy,
            x2: pb.x + ox,
            y2: pb.y + oy,
            stroke: COLORS[ls.state],
            'stroke-width': 4,
            'stroke-dasharray': ls.state === 'up' ? '' : '8 6',
          }),
        );
        const label = ls.state === 'up' && ls.rttMs !== null ? `${ls.rttMs.toFixed(2)} ms` : ls.state;
        const mx = (pa.x + pb.x) / 2 + ox * 2.2;
        const my = (pa.y + pb.y) / 2 + oy * 2.2;
        g.append(
          svg('rect', { x: mx - 34, y: my - 10, width: 68, height: 18, rx: 4, fill: '#fff', opacity: 0.9 }),
        );
        g.append(
          svg(
            'text',
            { x: mx, y: my + 3, 'text-anchor': 'middle', 'font-size': 11, fill: COLORS[ls.state] },
            label,
          ),
        );
        pic.append(g);
      }
    }
  for (const node of s.nodes) {
    const p = pos.get(node.name);
    const st = nodeState(node);
    const vs = s.vservers.filter((v) => v.node === node.name);
    const h = 46 + vs.length * 20;
    const g = svg('g', { 'data-node': node.name, 'data-state': st });
    const stroke = st === 'down' ? COLORS.down : st === 'up' ? COLORS.up : '#c98a00';
    g.append(
      svg('rect', {
        x: p.x - 70,
        y: p.y - 24,
        width: 140,
        height: h,
        rx: 8,
        fill: st === 'down' ? '#fdeeee' : '#fff',
        stroke,
        'stroke-width': s.manager === node.name ? 4 : 2,
      }),
    );
    g.append(svg('text', { x: p.x - 60, y: p.y - 5, 'font-size': 15, 'font-weight': 700 }, node.name));
    g.append(
      svg(
        'text',
        { x: p.x + 60, y: p.y - 5, 'font-size': 11, 'text-anchor': 'end', fill: stroke, 'font-weight': 600 },
        st === 'down' ? 'DOWN' : st,
      ),
    );
    const sub = `${node.role}${s.manager === node.name ? ' · ★ manager' : ''}`;
    g.append(svg('text', { x: p.x - 60, y: p.y + 12, 'font-size': 11, fill: '#6b7280' }, sub));
    vs.forEach((v, k) => {
      const y = p.y + 32 + k * 20;
      const color = v.status === 'healthy' ? COLORS.up : v.status === 'failed' ? COLORS.down : '#c98a00';
      const vg = svg('g', { 'data-vserver': v.name, 'data-status': v.status });
      vg.append(svg('rect', { x: p.x - 62, y: y - 13, width: 124, height: 18, rx: 4, fill: '#f1f5ff' }));
      vg.append(svg('circle', { cx: p.x - 52, cy: y - 4, r: 5, fill: color }));
      vg.append(svg('text', { x: p.x - 42, y: y, 'font-size': 12 }, `${v.name} ${v.status}`));
      g.append(vg);
    });
    pic.append(g);
  }
  const unplaced = s.vservers.filter((v) => !v.node);
  if (unplaced.length)
    pic.append(
      svg(
        'text',
        { x: 10, y: H - 8, 'font-size': 12, fill: COLORS.down },
        `not running: ${unplaced.map((v) => `${v.name} (${v.status})`).join(', ')}`,
      ),
    );
}

function stCell(text) {
  return el('td', { class: `st-${String(text).replace(/[^A-Za-z]/g, '')}` }, text);
}

function renderVservers(s) {
  const full = s.nodes.filter((n) => n.role !== 'witness').map((n) => n.name);
  const rows = s.vservers.map((v) => {
    const select = el('select', { 'aria-label': `migrate ${v.name} to`, 'data-migrate-target': v.name });
    for (const n of full.filter((x) => x !== v.node)) select.append(el('option', { value: n }, n));
    // data-label: the column's name, shown beside each value when a narrow screen stacks rows into cards.
    const cell = (label, node) => {
      node.setAttribute('data-label', label);
      return node;
    };
    return el(
      'tr',
      { 'data-vserver-row': v.name },
      cell('vserver', el('td', { class: 'name' }, v.name)),
      cell('node', el('td', {}, v.node ?? '-')),
      cell('state', stCell(v.status)),
      cell('epoch', el('td', {}, String(v.epoch))),
      cell('restarts', el('td', {}, `${v.restarts} (${v.relocations} moved)`)),
      cell(
        'last backup',
        el('td', { class: v.backup?.late || v.backup?.lastError ? 'st-failed' : '' }, backupText(v.backup)),
      ),
      el(
        'td',
        { class: 'actions' },
        select,
        el(
          'button',
          {
            type: 'button',
            'data-action': 'migrate',
            'data-vserver': v.name,
            onclick: () => migrate(v.name, select.value),
          },
          'Migrate',
        ),
        el(
          'button',
          {
            type: 'button',
            'data-action': 'clear',
            'data-vserver': v.name,
            onclick: () => clearFailures(v.name),
          },
          'Clear',
        ),
        el(
          'button',
          {
            type: 'button',
            'data-action': 'backup',
            'data-vserver': v.name,
            disabled: v.backup ? undefined : '',
            title: v.backup ? `back up ${v.name} now` : `${v.name} has no backup configuration`,
            onclick: () => backupNow(v.name),
          },
          'Backup now',
        ),
      ),
    );
  });
  $('vservers').replaceChildren(
    el(
      'div',
      { class: 'table-wrap' },
      el(
        'table',
        { class: 'cards' },
        el(
          'tr',
          {},
          ...['vserver', 'node', 'state', 'epoch', 'restarts', 'last backup', 'actions'].map((h) =>
            el('th', {}, h),
          ),
        ),
        ...rows,
      ),
    ),
  );
}

/** A vserver's scheduled backup (docs/backup.md): when it last succeeded, and trouble if any. */
function backupText(b) {
  if (!b) return '-';
  const last = b.lastSuccess ? new Date(b.lastSuccess.at).toLocaleString() : 'never';
  const trouble = b.lastError ? ' (last run failed)' : b.late ? ' (late)' : b.running ? ' (running)' : '';
  return `${last}${trouble}`;
}

function renderNodes(s) {
  const rows = s.nodes.map((n) => {
    const st = nodeState(n);
    const action =
      n.role === 'witness'
        ? null
        : n.standby
          ? el(
              'button',
              {
                type: 'button',
                'data-action': 'unstandby',
                'data-node': n.name,
                onclick: () => standby(n.name, false),
              },
              'Unstandby',
            )
          : el(
              'button',
              {
                type: 'button',
                'data-action': 'standby',
                'data-node': n.name,
                onclick: () => standby(n.name, true),
              },
              'Standby',
            );
    return el(
      'tr',
      { 'data-node-row': n.name },
      el('td', {}, n.name),
      el('td', {}, n.role),
      stCell(st),
      el('td', {}, n.agentVersion ?? '-'),
      el('td', { class: 'actions' }, action),
    );
  });
  $('nodes').replaceChildren(
    el(
      'div',
      { class: 'table-wrap' },
      el(
        'table',
        {},
        el('tr', {}, ...['node', 'role', 'state', 'agent', ''].map((h) => el('th', {}, h))),
        ...rows,
      ),
    ),
  );
}

function bytes(n) {
  if (n === null || n === undefined) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < u.length - 1) {
    x /= 1024;
    i++;
  }
  return `${i ? x.toFixed(1) : x} ${u[i]}`;
}

function renderVolumes(s) {
  const rows = [];
  for (const v of s.vservers)
    for (const r of v.replicas) {
      const sync = r.splitBrain
        ? 'SPLIT-BRAIN'
        : r.resyncBytesPerSecond
          ? `resync ${bytes(r.resyncBytesPerSecond)}/s, ${bytes(r.outOfSyncBytes)} left`
          : r.outOfSyncBytes
            ? `${bytes(r.outOfSyncBytes)} out of sync`
            : r.upToDate
              ? 'in sync'
              : '-';
      rows.push(
        el(
          'tr',
          { 'data-replica': `${v.name}@${r.node}` },
          el('td', {}, v.name),
          el('td', {}, r.node),
          stCell(r.role),
          stCell(r.diskState || '-'),
          el('td', {}, sync),
        ),
      );
    }
  $('volumes').replaceChildren(
    el(
      'div',
      { class: 'table-wrap' },
      el(
        'table',
        {},
        el('tr', {}, ...['volume', 'node', 'role', 'disk', 'sync'].map((h) => el('th', {}, h))),
        ...rows,
      ),
    ),
  );
}

function recordRtt(s) {
  const now = Date.now();
  for (const c of s.mesh?.matrix ?? []) {
    if (c.from > c.to) continue; // one direction per pair is enough for a trend
    const k = `${c.from}-${c.to}#${c.link}`;
    const list = state.rtt.get(k) ?? [];
    list.push({ t: now, ms: c.state === 'up' ? c.rttMs : null });
    if (list.length > RTT_POINTS) list.shift();
    state.rtt.set(k, list);
  }
}

function renderRtt() {
  const rows = [];
  for (const [k, list] of [...state.rtt.entries()].sort()) {
    const vals = list.map((p) => p.ms).filter((x) => x !== null);
    const max = Math.max(0.05, ...vals);
    const w = 160;
    const h = 28;
    // The newest sample on the right edge.
    const xOf = (i) => w - ((list.length - 1 - i) / (RTT_POINTS - 1)) * w;
    const pts = list
      .map((p, i) =>
        p.ms === null ? null : `${xOf(i).toFixed(1)},${(h - 2 - (p.ms / max) * (h - 4)).toFixed(1)}`,
      )
      .filter(Boolean)
      .join(' ');
    const plot = svg('svg', { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none' });
    plot.append(svg('polyline', { points: pts, fill: 'none', stroke: '#2456c9', 'stroke-width': 1.5 }));
    list.forEach((p, i) => {
      if (p.ms === null) plot.append(svg('rect', { x: xOf(i), y: 0, width: 2, height: h, fill: '#d0312d' }));
    });
    const last = list[list.length - 1];
    rows.push(
      el(
        'div',
        { class: 'spark', 'data-rtt': k },
        el('span', { class: 'label' }, k.replace('#', ' link ')),
        plot,
        el(
          'span',
          {},
          last?.ms === null || last?.ms === undefined
            ? 'down'
            : `${last.ms.toFixed(2)} ms (max ${max.toFixed(2)})`,
        ),
      ),
    );
  }
  $('rtt').replaceChildren(...rows);
}

// ---------- failover times (GET /api/failovers: from a lease's end to healthy elsewhere) ----------

async function loadFailovers() {
  clearTimeout(loadFailovers.timer);
  loadFailovers.timer = setTimeout(async () => {
    const r = await api('GET', '/api/failovers');
    if (r.status !== 200) return;
    state.failovers = r.data.failovers.slice(-20);
    renderFailovers();
  }, 300);
}

function renderFailovers() {
  const list = state.failovers ?? [];
  if (!list.length) {
    $('failovers').replaceChildren(el('p', { class: 'muted' }, 'no failover in the log yet'));
    return;
  }
  const w = 300;
  const h = 80;
  const max = Math.max(10, ...list.map((f) => f.seconds));
  const slot = w / 20;
  const plot = svg('svg', { viewBox: `0 0 ${w} ${h + 14}`, role: 'img', 'aria-label': 'failover times' });
  plot.append(svg('line', { x1: 0, y1: h, x2: w, y2: h, stroke: '#9aa0a6' }));
  plot.append(svg('text', { x: 2, y: 10, 'font-size': 9, fill: '#6b7280' }, `${max.toFixed(0)} s`));
  list.forEach((f, i) => {
    const bh = Math.max(1, (f.seconds / max) * (h - 12));
    const x = i * slot + 2;
    const g = svg('g', { 'data-failover': `${f.vserver}@${f.healthyAt}` });
    g.append(svg('rect', { x, y: h - bh, width: slot - 4, height: bh, fill: '#2456c9', rx: 1 }));
    g.append(
      svg(
        'title',
        {},
        `${f.vserver}: ${f.from} → ${f.to} in ${f.seconds} s (${new Date(f.expiredAt).toLocaleString()})`,
      ),
    );
    g.append(
      svg(
        'text',
        { x: x + (slot - 4) / 2, y: h + 11, 'font-size': 8, 'text-anchor': 'middle' },
        f.seconds.toFixed(0),
      ),
    );
    plot.append(g);
  });
  const last = list[list.length - 1];
  $('failovers').replaceChildren(
    plot,
    el(
      'p',
      { class: 'muted' },
      `last: ${last.vserver} ${last.from} → ${last.to} in ${last.seconds} s; ${list.length} shown, longest ${Math.max(...list.map((f) => f.seconds))} s`,
    ),
  );
}

function renderEvents() {
  const items = state.events
    .slice()
    .reverse()
    .map((e) =>
      el(
        'li',
        {},
        `${new Date(e.at).toLocaleTimeString()} ${e.node} `,
        el('span', { class: 'src' }, e.source),
        `: ${e.text}`,
      ),
    );
  $('events').replaceChildren(...items);
}

// ---------- actions ----------

function message(text, isError) {
  const m = $('message');
  m.hidden = false;
  m.textContent = text;
  m.className = isError ? 'error' : '';
  clearTimeout(message.timer);
  message.timer = setTimeout(() => {
    m.hidden = true;
  }, 15_000);
}

function confirmAction(text) {
  return new Promise((resolve) => {
    const d = $('confirm');
    $('confirm-text').textContent = text;
    d.returnValue = '';
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
  });
}

async function act(question, method, path, body, done) {
  if (!(await confirmAction(question))) return;
  const r = await api(method, path, body);
  if (r.status === 200) message(done);
  else if (r.status === 401) showLogin(r.data?.error || 'the token was refused');
  else message(`Refused (HTTP ${r.status}): ${r.data?.error ?? 'no reason given'}`, true);
}

function migrate(vserver, node) {
  if (!node) return message(`${vserver}: no other node to migrate to`, true);
  return act(
    `Migrate ${vserver} to ${node}? It stops where it runs and starts on ${node}.`,
    'POST',
    `/api/vservers/${encodeURIComponent(vserver)}/migrate`,
    { node },
    `${vserver}: migration to ${node} requested`,
  );
}

function clearFailures(vserver) {
  return act(
    `Clear the failures of ${vserver}? The manager places it again.`,
    'POST',
    `/api/vservers/${encodeURIComponent(vserver)}/clear`,
    {},
    `${vserver}: failures cleared`,
  );
}

function standby(node, on) {
  return act(
    on ? `Put ${node} in standby? Its vservers move off one at a time.` : `End the standby of ${node}?`,
    'POST',
    `/api/nodes/${encodeURIComponent(node)}/${on ? 'standby' : 'unstandby'}`,
    {},
    on ? `${node} is in standby` : `${node} is no longer in standby`,
  );
}

function backupNow(vserver) {
  return act(
    `Back up ${vserver} now? The node that runs it makes a snapshot and sends it to the backup repository.`,
    'POST',
    `/api/vservers/${encodeURIComponent(vserver)}/backup`,
    {},
    `${vserver}: backup requested (the cluster's log shows when it is done)`,
  );
}

$('maintenance-toggle').addEventListener('click', () => {
  const on = !state.status?.maintenance;
  return act(
    on
      ? 'Turn maintenance on? The manager then decides nothing (no failover) until it is turned off.'
      : 'Turn maintenance off? The manager decides again.',
    'POST',
    '/api/maintenance',
    { on },
    on ? 'maintenance on' : 'maintenance off',
  );
});

if (state.token) void signIn(state.token);
else showLogin('');
