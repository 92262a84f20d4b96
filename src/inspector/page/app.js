// modemfleet inspector: a live grid of the fleet over /ws, details and commands over /api.
// Plain JavaScript, no build step and no CDN: the page must work on a farm without internet.
// Strings from modems (operator names, reasons) are only ever set as textContent.

const STATES = [
  'online',
  'initializing',
  'detecting',
  'enabling',
  'disabling',
  'resetting',
  'recovering',
  'error',
  'disabled',
  'removed',
];
// a modem whose host is marked dead: counted and filtered apart from its (last recorded) state
const STALE = 'stale';
const BUSY = new Set(['detecting', 'enabling', 'disabling', 'resetting']);
const TOKEN_KEY = 'modemfleet.token';

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const modems = new Map(); // imei -> modem view (as the API returns it)
const silences = new Map(); // imei -> until: alerts recorded, not pushed
const cards = new Map(); // imei -> { root, fields }
const dirty = new Set();
let order = []; // imeis in display order
let frame = 0;
// a farm of 10,000 modems keeps the page responsive: cards exist only for the first matching
// modems (WINDOW_STEP more per "show more"); counts, search and filters still cover every modem
const WINDOW_STEP = 240;
let windowSize = WINDOW_STEP;
let placeNeeded = false;
let token = '';
let ws = null;
let wsAttempt = 0;
let resyncAsked = false;
/**
 * A snapshot's other rows (`snapshot_rest`) and whatever came after them, held until the first
 * screen has been painted: reading 10,000 rows must not delay it. Null when nothing is held.
 */
let held = null;
/** Rows of the last snapshot still to come in its `snapshot_rest`. */
let restExpected = 0;
let selected = null;
let selectedHealth = [];
let oldestSeq = null;
/** What the token may do (GET /api/whoami): the page hides what it cannot. */
let who = { scope: 'admin', passwords: true, commands: true, modems: null };

// ---------- token ----------

function readToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get('token');
  if (fromHash) {
    localStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, '', location.pathname + location.search);
    return fromHash;
  }
  return localStorage.getItem(TOKEN_KEY) ?? '';
}

function askToken(message) {
  $('login').hidden = false;
  $('login-error').textContent = message ?? '';
  $('token').focus();
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  connect();
});

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: {
      authorization: `Bearer ${token}`,
      ...(options.body ? { 'content-type': 'application/json' } : {}),
    },
  });
  if (res.status === 401) {
    askToken('That token was refused.');
    throw new Error('unauthorized');
  }
  const body = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error(body?.message ?? `HTTP ${res.status}`);
  return body;
}

// ---------- live connection ----------

/** The token's scope, shown in the header; commands and passwords hidden where it has none. */
function loadScope() {
  api('/api/whoami')
    .then((w) => {
      who = w;
      const badge = $('scope');
      badge.hidden = w.scope === 'admin';
      badge.textContent =
        w.scope === 'read-only'
          ? 'read-only token: no commands, no passwords'
          : `reseller token: ${w.modems?.length ?? 0} modems`;
      document.querySelector('.actions').hidden = !w.commands;
      $('p-readonly').hidden = w.commands;
      if (selected) renderPanelHead();
    })
    .catch(() => undefined);
}

function connect() {
  if (!token) return askToken();
  loadScope();
  // the snapshot in two messages: the first screen's cards, then the rest (read after a paint)
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws?token=${encodeURIComponent(token)}&first=${WINDOW_STEP}`;
  performance.mark('modemfleet:connect');
  ws = new WebSocket(url);
  ws.onopen = () => {
    wsAttempt = 0;
  };
  const socket = ws;
  ws.onmessage = (e) => {
    if (held === null && e.data.startsWith('{"type":"snapshot_rest"')) {
      held = [];
      // a frame is painted, then the rest is read (a timer set in an animation frame runs after it)
      requestAnimationFrame(() => setTimeout(() => releaseHeld(socket)));
    }
    if (held !== null) held.push(e.data);
    else handleRaw(e.data);
  };
  ws.onclose = (e) => {
    setConn(false, 'reconnecting');
    ws = null;
    held = null;
    if (e.code === 1006 && wsAttempt > 2 && modems.size === 0) {
      // the upgrade may have been refused: ask the API whether the token still works
      api('/api/alerts?limit=1').catch(() => undefined);
    }
    const delay = Math.min(500 * 2 ** wsAttempt++, 10_000);
    setTimeout(connect, delay);
  };
}

function handleRaw(data) {
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  onMessage(m);
}

/** The held messages, in order (unless their connection has gone since: a new one starts over). */
function releaseHeld(socket) {
  if (ws !== socket || held === null) return;
  const messages = held;
  held = null;
  for (const data of messages) handleRaw(data);
}

function send(message) {
  if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function setConn(up, text) {
  const c = $('conn');
  c.className = `conn ${up ? 'up' : 'down'}`;
  c.textContent = text;
}

function onMessage(m) {
  switch (m.type) {
    case 'snapshot':
      // marks for whoever measures the page (the farm benchmark): snapshot in, cards drawn
      performance.mark('modemfleet:snapshot');
      resyncAsked = false;
      modems.clear();
      for (const modem of m.modems) modems.set(modem.imei, modem);
      order = m.modems.map((x) => x.imei);
      // the other rows follow (`rest`): the counts say so until they are in
      restExpected = m.rest ?? 0;
      renderAll();
      performance.mark('modemfleet:rendered');
      // (a timer set in an animation frame runs after that frame is painted)
      requestAnimationFrame(() => setTimeout(() => performance.mark('modemfleet:painted')));
      renderAlerts(m.alerts);
      api('/api/silences')
        .then(renderSilences)
        .catch(() => undefined);
      setConn(true, 'live');
      if (selected && modems.has(selected)) refreshPanel();
      break;
    case 'snapshot_rest':
      for (const modem of m.modems) {
        modems.set(modem.imei, modem);
        order.push(modem.imei);
      }
      restExpected = 0;
      placeCards();
      renderCounts();
      performance.mark('modemfleet:complete');
      if (selected && modems.has(selected)) refreshPanel();
      break;
    case 'transition':
      onTransition(m);
      break;
    case 'modem': {
      const known = modems.get(m.modem.imei);
      if (!known || m.modem.seq >= known.seq) {
        if (!known) {
          order.push(m.modem.imei);
          placeNeeded = true;
        }
        modems.set(m.modem.imei, m.modem);
        markDirty(m.modem.imei);
      }
      break;
    }
    case 'health': {
      const modem = modems.get(m.imei);
      if (modem) {
        modem.rssi = m.rssi;
        modem.rsrp = m.rsrp;
        modem.sinr = m.sinr;
        if (m.operator) modem.operator = m.operator;
        if (m.technology) modem.technology = m.technology;
        markDirty(m.imei);
      }
      if (selected === m.imei) {
        selectedHealth.push(m);
        drawSpark();
      }
      break;
    }
    case 'command':
      if (selected === m.imei) showCommand(m);
      break;
    case 'alert':
      loadAlerts();
      break;
    case 'resync':
      setConn(false, 'resyncing');
      break;
    case 'error':
      console.warn('inspector:', m.message);
      break;
  }
}

function onTransition(t) {
  const modem = modems.get(t.imei);
  if (!modem) {
    // a modem we have never seen: its row follows in a 'modem' message
    return;
  }
  if (t.seq <= modem.seq) return; // already in the snapshot or row
  if (t.seq !== modem.seq + 1) {
    // a gap: something was missed; ask for a fresh snapshot once
    if (!resyncAsked) {
      resyncAsked = true;
      send({ type: 'resync' });
      // the server takes one resync a second: ask again if no snapshot came
      setTimeout(() => {
        resyncAsked = false;
      }, 3000);
    }
    return;
  }
  modem.seq = t.seq;
  const top = t.to.split('.')[0];
  if (top !== modem.state) modem.since = t.at;
  modem.state = top;
  modem.substate = t.to === top ? null : t.to;
  if (top !== 'online') modem.wanIp = null;
  markDirty(t.imei);
  if (selected === t.imei) prependTimeline(t);
}

// ---------- grid ----------

function markDirty(imei) {
  dirty.add(imei);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  // the window changes only when a modem is new or, with a filter on, may have started or stopped matching
  const filtered = $('filter').value !== '' || $('search').value.trim() !== '';
  let place = placeNeeded;
  for (const imei of dirty) {
    if (cards.has(imei)) renderCard(imei);
    if (filtered) place = true;
  }
  dirty.clear();
  placeNeeded = false;
  if (place) placeCards();
  renderCounts();
  if (selected) renderPanelHead();
}

function renderAll() {
  const grid = $('grid');
  for (const [imei, card] of cards) {
    if (!modems.has(imei)) {
      card.root.remove();
      cards.delete(imei);
    }
  }
  for (const imei of cards.keys()) renderCard(imei);
  placeCards();
  renderCounts();
  grid.setAttribute('aria-busy', 'false');
}

/** The grid holds the cards of the first `windowSize` matching modems, in order; the rest are counted. */
function placeCards() {
  const grid = $('grid');
  const shown = [];
  let matching = 0;
  for (const imei of order) {
    const m = modems.get(imei);
    if (!m || !matches(m)) continue;
    matching++;
    if (shown.length < windowSize) shown.push(imei);
  }
  const keep = new Set(shown);
  for (const [imei, card] of cards) {
    if (!keep.has(imei)) {
      card.root.remove();
      cards.delete(imei);
    }
  }
  const fragment = document.createDocumentFragment();
  for (const imei of shown) {
    if (!cards.has(imei)) renderCard(imei);
    const card = cards.get(imei);
    if (card) fragment.appendChild(card.root);
  }
  if (matching > shown.length) {
    const more = el(
      'button',
      'more',
      `show ${Math.min(WINDOW_STEP, matching - shown.length)} more of ${matching - shown.length}`,
    );
    more.type = 'button';
    more.addEventListener('click', () => {
      windowSize += WINDOW_STEP;
      placeCards();
    });
    fragment.appendChild(more);
  }
  grid.replaceChildren(fragment);
  $('empty').hidden = matching > 0 || modems.size === 0;
}

function makeCard(imei) {
  const root = el('article', 'card');
  root.dataset.imei = imei;
  const top = el('div', 'top');
  const id = el('span', 'imei');
  id.append(imei.slice(0, 9), el('b', '', imei.slice(9)));
  const state = el('span', 'state');
  const stale = el('span', 'stale-badge', STALE);
  stale.hidden = true;
  top.append(id, stale, state);
  const addr = el('div', 'addr');
  const meta = el('div', 'meta');
  const operator = el('span', 'op');
  const bars = el('span', 'bars');
  for (let i = 0; i < 4; i++) bars.append(el('i'));
  meta.append(operator, bars);
  const ports = el('div', 'ports');
  const portText = el('span', 'pt');
  const since = el('span', 'since');
  ports.append(portText, since);
  const reason = el('div', 'reason');
  root.append(top, addr, meta, ports, reason);
  root.addEventListener('click', () => openPanel(imei));
  const card = { root, state, stale, addr, operator, bars, portText, since, reason };
  cards.set(imei, card);
  return card;
}

function signalBars(rssi) {
  if (rssi === null || rssi === undefined) return 0;
  return rssi >= -65 ? 4 : rssi >= -75 ? 3 : rssi >= -85 ? 2 : rssi >= -95 ? 1 : 0;
}

function ago(since) {
  const s = Math.max(0, Math.round((Date.now() - new Date(since).getTime()) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function renderCard(imei) {
  const m = modems.get(imei);
  if (!m) return;
  const c = cards.get(imei) ?? makeCard(imei);
  c.root.dataset.state = m.state;
  c.state.textContent = m.substate ? m.substate.replace(/^[a-z]+\./, '') : m.state;
  c.state.title = m.substate ?? m.state;
  // its host is dead: the last state it recorded, greyed, with the badge
  c.root.classList.toggle('stale', m.stale === true);
  c.stale.hidden = m.stale !== true;
  c.stale.title = m.stale ? `host ${m.host ?? '?'} is not running: last recorded state shown` : '';
  // behind carrier NAT the public address (what customers get) is not the modem's own
  c.addr.textContent =
    m.publicIp && m.publicIp !== m.wanIp ? `${m.publicIp} (${m.wanIp ?? '—'})` : (m.wanIp ?? '—');
  c.operator.textContent = [m.operator, m.technology].filter(Boolean).join(' · ') || '—';
  const n = signalBars(m.rssi);
  c.bars.title = m.rssi === null || m.rssi === undefined ? 'no signal reading' : `RSSI ${m.rssi} dBm`;
  [...c.bars.children].forEach((b, i) => b.classList.toggle('on', i < n));
  c.portText.textContent = m.proxy ? `HTTP ${m.proxy.httpPort} · SOCKS ${m.proxy.socksPort}` : 'no ports';
  c.since.textContent = ago(m.since);
  // why it is in error, or why its port is closed (quota, expiry); a dead host's modem says so
  c.reason.textContent = m.stale ? `host ${m.host ?? '?'} not running` : (m.reason ?? '');
  c.root.classList.toggle('selected', selected === imei);
  c.root.hidden = !matches(m);
}

function renderCounts() {
  const counts = new Map();
  for (const m of modems.values()) {
    const key = m.stale ? STALE : m.state;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const box = $('counts');
  box.replaceChildren(
    ...[...STATES, STALE]
      .filter((s) => counts.has(s))
      .map((s) => {
        const chip = el('button', 'chip', `${s} ${counts.get(s)}`);
        chip.type = 'button';
        chip.dataset.state = s;
        chip.addEventListener('click', () => {
          $('filter').value = $('filter').value === s ? '' : s;
          applyFilter();
        });
        return chip;
      }),
  );
  box.title = `${modems.size} modems`;
  if (restExpected > 0) box.append(el('span', 'loading', `loading ${restExpected} more…`));
}

function matches(m) {
  const f = $('filter').value;
  if (
    f === STALE
      ? m.stale !== true
      : f === 'busy'
        ? m.stale || !BUSY.has(m.state)
        : f && (m.stale || m.state !== f)
  )
    return false;
  const q = $('search').value.trim().toLowerCase();
  if (!q) return true;
  const hay = [
    m.imei,
    m.publicIp,
    m.wanIp,
    m.operator,
    m.host,
    m.reason,
    m.iccid,
    m.proxy?.httpPort,
    m.proxy?.socksPort,
  ]
    .filter((x) => x !== null && x !== undefined)
    .join(' ')
    .toLowerCase();
  return hay.includes(q);
}

function applyFilter() {
  windowSize = WINDOW_STEP;
  placeCards();
}

$('search').addEventListener('input', applyFilter);
$('filter').addEventListener('change', applyFilter);
setInterval(() => {
  for (const [imei, card] of cards) {
    const m = modems.get(imei);
    if (m && !card.root.hidden) card.since.textContent = ago(m.since);
  }
}, 1000);

// ---------- the modem panel ----------

async function openPanel(imei) {
  if (selected) cards.get(selected)?.root.classList.remove('selected');
  selected = imei;
  selectedStats = null;
  selectedAddresses = null;
  selectedDetail = null;
  selectedUptime = null;
  cards.get(imei)?.root.classList.add('selected');
  $('alerts').hidden = true;
  $('panel').hidden = false;
  $('p-command').hidden = true;
  $('p-timeline').replaceChildren();
  selectedHealth = [];
  drawSpark();
  drawHistory(null);
  renderPanelHead();
  await refreshPanel();
}

async function refreshPanel() {
  const imei = selected;
  loadHistory(imei);
  try {
    const since = new Date(Date.now() - 3600_000).toISOString();
    const now = new Date();
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
    const dayAgo = new Date(now.getTime() - 23 * 3600_000).toISOString();
    const [detail, transitions, health, stats, addresses, uptime, hours, days] = await Promise.all([
      api(`/api/modems/${imei}`),
      api(`/api/modems/${imei}/transitions?limit=50`),
      api(`/api/modems/${imei}/health?since=${encodeURIComponent(since)}`),
      api(`/api/modems/${imei}/addresses/stats`).catch(() => null),
      api(`/api/modems/${imei}/addresses?limit=5`).catch(() => null),
      api(`/api/modems/${imei}/uptime`).catch(() => null),
      api(`/api/modems/${imei}/traffic?step=1h&from=${encodeURIComponent(dayAgo)}`).catch(() => null),
      api(`/api/modems/${imei}/traffic?step=1d&from=${encodeURIComponent(monthStart)}`).catch(() => null),
    ]);
    if (selected !== imei) return;
    const known = modems.get(imei);
    if (!known || detail.seq >= known.seq) modems.set(imei, { ...known, ...detail });
    selectedStats = stats;
    selectedAddresses = addresses;
    selectedDetail = detail;
    selectedUptime = uptime;
    renderPanelHead(detail);
    $('p-timeline').replaceChildren(...transitions.map(timelineItem));
    oldestSeq = transitions.length ? transitions[transitions.length - 1].seq : null;
    $('p-more').hidden = !(oldestSeq > 1);
    selectedHealth = health;
    drawSpark();
    drawTraffic(hours, days);
  } catch (err) {
    toast(`could not load ${imei}: ${err.message}`);
  }
}

/** `3 rotations, 2 addresses in 2 /24s, 33 % reused`: what rotations gave over one window. */
function statsText(s) {
  if (!s) return '—';
  const reuse = s.reuseRate === null ? '' : `, ${Math.round(s.reuseRate * 100)} % reused`;
  return `${s.rotations} rotations, ${s.distinctAddresses} addresses in ${s.distinctNetworks} /24s${reuse}`;
}

/** The open panel's address statistics and last public addresses (refreshed with the panel). */
let selectedStats = null;
let selectedAddresses = null;
let selectedDetail = null;
let selectedUptime = null;

/** `99.5 % · 98 % · 97.1 %` over 24 h, 7 d, 30 d (— where it was never wanted). */
function uptimeText(u) {
  if (!u) return '—';
  const pct = (w) =>
    u[w]?.ratio === null || u[w] === undefined ? '—' : `${(u[w].ratio * 100).toFixed(1)} %`;
  return `${pct('24h')} (24 h) · ${pct('7d')} (7 d) · ${pct('30d')} (30 d)`;
}

/** `every 600 s ± 60 s`, `off`, or the farm default: the modem's own rotation schedule. */
function scheduleText(s) {
  if (s === undefined) return '…';
  if (s === null) return 'farm default (if any)';
  if (s.off) return 'off';
  return `every ${s.intervalSeconds} s${s.jitterSeconds ? ` ± ${s.jitterSeconds} s` : ''}`;
}

/** `2.10 GB of 10.0 GB this month (port closed: quota_exceeded) · expires ...`, or none. */
function quotaText(q) {
  if (q === undefined) return '…';
  if (q === null) return 'none';
  const parts = [];
  if (q.bytes !== null)
    parts.push(
      `${bytesText(q.used ?? 0)} of ${bytesText(q.bytes)} ${q.period === 'total' ? 'in total' : `this ${q.period}`}`,
    );
  if (q.expiresAt) parts.push(`expires ${new Date(q.expiresAt).toLocaleString()}`);
  if (q.closed) parts.push(`port closed: ${q.closed}`);
  return parts.join(' · ') || 'none';
}

/** The last public addresses, newest first, with when each was last seen. */
function addressesText(list) {
  if (!list || list.length === 0) return '—';
  return list.map((a) => `${a.publicIp} (${ago(a.lastSeen)} ago)`).join(', ');
}

function renderPanelHead(detail) {
  const stats = selectedStats;
  const m = modems.get(selected);
  if (!m) return;
  $('p-title').textContent = m.imei;
  const st = $('p-state');
  st.dataset.state = m.state;
  st.replaceChildren(el('span', 'state', m.substate ?? m.state), ` for ${ago(m.since)}`);
  const facts = [
    ['public address', m.publicIp ?? '—'],
    ['recent public', addressesText(selectedAddresses)],
    ['uptime', uptimeText(selectedUptime)],
    ['rotation schedule', scheduleText((detail ?? selectedDetail)?.schedule)],
    ['quota', quotaText((detail ?? selectedDetail)?.quota)],
    ['last 24 h', statsText(stats?.['24h'])],
    ['last 7 days', statsText(stats?.['7d'])],
    ['address', m.wanIp ?? '—'],
    ['HTTP proxy', m.proxy ? `${m.proxy.host ?? location.hostname}:${m.proxy.httpPort}` : '—'],
    ['SOCKS5 proxy', m.proxy ? `${m.proxy.host ?? location.hostname}:${m.proxy.socksPort}` : '—'],
    [
      'login',
      m.proxy
        ? `${m.proxy.username} / ${m.proxy.password ?? (who.passwords ? '—' : '(hidden from this token)')}`
        : '—',
    ],
    ['operator', [m.operator, m.technology].filter(Boolean).join(' · ') || '—'],
    [
      'signal',
      m.rssi === null || m.rssi === undefined
        ? '—'
        : `RSSI ${m.rssi} dBm${m.rsrp ? `, RSRP ${m.rsrp}` : ''}${m.sinr !== null && m.sinr !== undefined ? `, SINR ${m.sinr} dB` : ''}`,
    ],
    ['host', m.host ?? '—'],
    ['USB path', m.usbPath ?? '—'],
    ['ICCID', m.iccid ?? '—'],
    ['desired', m.desiredState],
    [
      'alerts',
      silences.has(m.imei) ? `silenced until ${new Date(silences.get(m.imei)).toLocaleString()}` : 'pushed',
    ],
  ];
  $('p-silence').textContent = silences.has(m.imei) ? 'End silence' : 'Silence alerts 2 h';
  $('p-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', '', k), el('dd', '', v)]));
  if (detail) renderLink(detail.rotationLink);
  const last = detail?.lastError;
  const box = $('p-error');
  if (m.state === 'error' || last) {
    box.hidden = false;
    const reason = m.state === 'error' ? m.reason : last?.reason;
    const when = last ? ` (${new Date(last.at).toLocaleString()})` : '';
    box.textContent = `${m.state === 'error' ? 'error' : 'last error'}: ${reason ?? 'unknown'}${when}${last?.message ? ` — ${last.message}` : ''}`;
  } else if (detail) box.hidden = true;
}

const POLL = /^online\.(serving|polling)$/;

function timelineItem(t) {
  const li = el('li');
  // the periodic signal poll (serving ⇄ polling) is hidden unless asked for
  if (POLL.test(t.from ?? '') && POLL.test(t.to)) li.className = 'poll';
  li.value = t.seq;
  li.dataset.seq = t.seq;
  const time = el('time', '', new Date(t.at).toLocaleTimeString());
  time.dateTime = t.at;
  li.append(
    time,
    ' ',
    el('span', 'from', t.from ?? '∅'),
    ' → ',
    el('span', 'to', t.to),
    ' ',
    el('span', 'ev', t.event),
  );
  return li;
}

function prependTimeline(t) {
  const list = $('p-timeline');
  if (list.querySelector(`[data-seq="${t.seq}"]`)) return;
  list.prepend(timelineItem(t));
  while (list.children.length > 200) list.lastElementChild.remove();
}

$('p-polls').addEventListener('change', () => {
  $('p-timeline').classList.toggle('hide-polls', !$('p-polls').checked);
});

$('p-more').addEventListener('click', async () => {
  if (!selected || !oldestSeq) return;
  const older = await api(`/api/modems/${selected}/transitions?limit=50&before=${oldestSeq}`);
  $('p-timeline').append(...older.map(timelineItem));
  oldestSeq = older.length ? older[older.length - 1].seq : null;
  $('p-more').hidden = !(oldestSeq > 1);
});

/** Bytes for people, in decimal units as carriers bill: `1.23 GB`. */
function bytesText(n) {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

const sum = (points, key) => (points ?? []).reduce((n, p) => n + p[key], 0);

/**
 * Today and this month (from `/traffic?step=1d`), and the last 24 hours per hour as bars (download
 * over upload). Each bar carries `data-at`, `data-download` and `data-upload`, the chart its
 * totals: what a browser test reads back.
 */
function drawTraffic(hours, days) {
  const svg = $('p-traffic-chart');
  const today = days?.length ? days[days.length - 1] : null;
  $('p-traffic-totals').textContent = days
    ? `today ↓ ${bytesText(today?.download ?? 0)} ↑ ${bytesText(today?.upload ?? 0)} · this month ↓ ${bytesText(sum(days, 'download'))} ↑ ${bytesText(sum(days, 'upload'))}`
    : '—';
  svg.dataset.download = String(sum(hours, 'download'));
  svg.dataset.upload = String(sum(hours, 'upload'));
  if (!hours?.length) {
    svg.replaceChildren();
    return;
  }
  const top = Math.max(1, ...hours.map((p) => p.download + p.upload));
  const width = 300 / hours.length;
  const NS = 'http://www.w3.org/2000/svg';
  svg.replaceChildren(
    ...hours.map((p, i) => {
      const g = document.createElementNS(NS, 'g');
      g.classList.add('bar');
      g.dataset.at = p.at;
      g.dataset.download = String(p.download);
      g.dataset.upload = String(p.upload);
      const title = document.createElementNS(NS, 'title');
      title.textContent = `${new Date(p.at).toLocaleString()}: ↓ ${bytesText(p.download)} ↑ ${bytesText(p.upload)}`;
      const bar = (cls, bytes, below) => {
        const r = document.createElementNS(NS, 'rect');
        r.classList.add(cls);
        const h = (bytes / top) * 58;
        r.setAttribute('x', (i * width + 0.5).toFixed(2));
        r.setAttribute('width', Math.max(0.5, width - 1).toFixed(2));
        r.setAttribute('y', (60 - below - h).toFixed(2));
        r.setAttribute('height', h.toFixed(2));
        return r;
      };
      const up = (p.upload / top) * 58;
      g.append(title, bar('up', p.upload, 0), bar('down', p.download, up));
      return g;
    }),
  );
}

function drawSpark() {
  const svg = $('p-spark');
  const points = selectedHealth.filter((h) => typeof h.rssi === 'number');
  if (points.length < 2) {
    svg.replaceChildren();
    return;
  }
  const t0 = new Date(points[0].at).getTime();
  const t1 = new Date(points[points.length - 1].at).getTime();
  const span = Math.max(1, t1 - t0);
  // RSSI from -113 (no signal) to -51 dBm (excellent)
  const y = (r) => 58 - ((Math.min(-51, Math.max(-113, r)) + 113) / 62) * 56;
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute(
    'points',
    points
      .map((p) => `${(((new Date(p.at).getTime() - t0) / span) * 300).toFixed(1)},${y(p.rssi).toFixed(1)}`)
      .join(' '),
  );
  svg.replaceChildren(line);
}

// ---------- signal and state over the last 24 h ----------

const SVG_NS = 'http://www.w3.org/2000/svg';
const HISTORY_HOURS = 24;
/** Fixed scales, so two modems' charts compare at a glance. */
const SCALES = {
  rsrp: { label: 'RSRP', unit: 'dBm', min: -140, max: -44 },
  sinr: { label: 'SINR', unit: 'dB', min: -20, max: 30 },
};

function svgEl(tag, attrs = {}, title) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (title !== undefined) {
    const t = document.createElementNS(SVG_NS, 'title');
    t.textContent = title;
    e.append(t);
  }
  return e;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/** GET /api/modems/:imei/history: at most 288 points a series, drawn as they come. */
async function loadHistory(imei) {
  try {
    const history = await api(`/api/modems/${imei}/history?hours=${HISTORY_HOURS}`);
    if (selected === imei) drawHistory(history);
  } catch (err) {
    if (selected === imei) drawHistory(null, err.message);
  }
}

function drawHistory(h, error) {
  const section = $('p-history');
  if (!h) {
    for (const id of ['p-states', 'p-rsrp', 'p-sinr']) $(id).replaceChildren();
    $('p-history-note').textContent = error ? `(not available: ${error})` : '';
    $('p-history-from').textContent = '';
    $('p-history-to').textContent = '';
    delete section.dataset.from;
    delete section.dataset.to;
    return;
  }
  const from = Date.parse(h.from);
  const to = Date.parse(h.to);
  const span = Math.max(1, to - from);
  const x = (ms) => ((ms - from) / span) * 300;
  section.dataset.from = h.from;
  section.dataset.to = h.to;
  // the state strip: each state from its start to the next one's (the last one to now)
  $('p-states').replaceChildren(
    ...h.states.map((s, i) => {
      const start = Date.parse(s.at);
      const end = i + 1 < h.states.length ? Date.parse(h.states[i + 1].at) : to;
      return svgEl(
        'rect',
        {
          x: x(start).toFixed(2),
          y: 0,
          width: Math.max(0.3, x(end) - x(start)).toFixed(2),
          height: 10,
          'data-at': s.at,
          'data-state': s.state,
        },
        `${s.state} ${clock(start)} – ${i + 1 < h.states.length ? clock(end) : 'now'}`,
      );
    }),
  );
  drawSeries($('p-rsrp'), h, 'rsrp', x);
  drawSeries($('p-sinr'), h, 'sinr', x);
  const polls = h.signal.reduce((n, p) => n + p.samples, 0);
  $('p-history-note').textContent = polls ? `${polls} signal polls` : 'no signal polls';
  $('p-history-from').textContent = clock(from);
  $('p-history-to').textContent = 'now';
}

/** One series as a line (broken where values or polls are missing) and a dot per point with its value. */
function drawSeries(svg, h, key, x) {
  const { label, unit, min, max } = SCALES[key];
  const y = (v) => 46 - ((Math.min(max, Math.max(min, v)) - min) / (max - min)) * 44;
  // more than two buckets without a poll: the modem was away, the line breaks
  const gapMs = 2.5 * h.bucketSeconds * 1000;
  let d = '';
  let previous = null;
  const dots = [];
  for (const p of h.signal) {
    const v = p[key];
    if (v === null || v === undefined) {
      previous = null;
      continue;
    }
    const t = Date.parse(p.at);
    const px = x(t).toFixed(2);
    const py = y(v).toFixed(2);
    d += `${previous === null || t - previous > gapMs ? 'M' : 'L'}${px},${py} `;
    previous = t;
    const mean = p.samples > 1 ? ` (mean of ${p.samples} polls)` : '';
    dots.push(
      svgEl(
        'circle',
        { cx: px, cy: py, r: 2, 'data-at': p.at, 'data-value': v },
        `${clock(t)} ${label} ${v} ${unit}${mean}`,
      ),
    );
  }
  svg.replaceChildren(svgEl('path', { class: 'line', d: d.trim() }), ...dots);
}

setInterval(() => {
  if (selected && !$('panel').hidden) loadHistory(selected);
}, 60_000);

function showCommand(c) {
  const box = $('p-command');
  box.hidden = false;
  box.dataset.id = c.id;
  box.dataset.status = c.status;
  box.textContent = `${c.kind} #${c.id}: ${c.status}`;
  if (c.status === 'done' || c.status === 'failed') {
    api(`/api/commands/${c.id}`)
      .then((full) => {
        if (box.dataset.id !== String(c.id)) return;
        const r = full.result ?? {};
        const extra = r.publicIp
          ? ` — public address ${r.publicIp}${r.previousPublicIp ? ` (was ${r.previousPublicIp})` : ''}`
          : r.wanIp
            ? ` — new address ${r.wanIp}`
            : r.message
              ? ` — ${r.message}`
              : r.error
                ? ` — ${r.error}`
                : '';
        box.textContent = `${c.kind} #${c.id}: ${c.status}${extra}`;
      })
      .catch(() => undefined);
  }
}

const CONFIRM = {
  rotate: 'Rotate the public address of this modem? Connections through its ports will drop.',
  reset: 'Reset this modem (AT+CFUN=1,1)? It will be offline for about a minute.',
  disable: 'Disable this modem? Its ports stop serving until it is enabled again.',
  enable: 'Enable this modem?',
};

function confirmDialog(text) {
  return new Promise((resolve) => {
    const dialog = $('confirm');
    $('confirm-text').textContent = text;
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

$('p-credentials').addEventListener('click', async () => {
  const imei = selected;
  const text = 'Give this modem a new proxy password? The current one stops working at once.';
  if (!imei || !(await confirmDialog(`${text}\n\n${imei}`))) return;
  try {
    const r = await api(`/api/modems/${imei}/credentials`, { method: 'POST' });
    const m = modems.get(imei);
    if (m?.proxy) m.proxy = { ...m.proxy, password: r.password };
    renderPanelHead();
    toast(`new password for ${imei}: ${r.command.status === 'done' ? 'in force' : r.command.status}`);
  } catch (err) {
    toast(`new password refused: ${err.message}`);
  }
});

for (const button of document.querySelectorAll('.actions button[data-kind]')) {
  button.addEventListener('click', async () => {
    const imei = selected;
    const kind = button.dataset.kind;
    if (!imei || !(await confirmDialog(`${CONFIRM[kind]}\n\n${imei}`))) return;
    try {
      const r = await api(`/api/modems/${imei}/commands`, { method: 'POST', body: JSON.stringify({ kind }) });
      showCommand({ id: r.id, imei, kind, status: r.status });
      toast(`${kind} queued for ${imei} (#${r.id})`);
    } catch (err) {
      toast(`${kind} refused: ${err.message}`);
    }
  });
}

// ---------- rotation link ----------

function renderLink(link) {
  $('p-link-state').textContent = link
    ? `active since ${new Date(link.createdAt).toLocaleString()} (by ${link.createdBy}); ` +
      (link.lastUsedAt ? `last used ${ago(link.lastUsedAt)} ago` : 'never used')
    : 'none';
  $('p-link-revoke').disabled = !link;
}

$('p-link-new').addEventListener('click', async () => {
  const imei = selected;
  const warning = document.querySelector('#p-link .warning').textContent.replace(/\s+/g, ' ').trim();
  if (
    !imei ||
    !(await confirmDialog(
      `Create a new rotation link for ${imei}? The current one stops working.\n\n${warning}`,
    ))
  )
    return;
  try {
    const r = await api(`/api/modems/${imei}/rotation-link`, { method: 'POST' });
    const input = $('p-link-url');
    input.hidden = false;
    input.value = r.url;
    input.select();
    toast(r.warning ?? 'rotation link created');
    await refreshPanel();
  } catch (err) {
    toast(`rotation link refused: ${err.message}`);
  }
});

$('p-link-revoke').addEventListener('click', async () => {
  const imei = selected;
  if (!imei || !(await confirmDialog(`Revoke the rotation link of ${imei}? It stops working at once.`)))
    return;
  try {
    await api(`/api/modems/${imei}/rotation-link`, { method: 'DELETE' });
    $('p-link-url').hidden = true;
    toast(`rotation link of ${imei} revoked`);
    await refreshPanel();
  } catch (err) {
    toast(`revoke refused: ${err.message}`);
  }
});

$('p-close').addEventListener('click', () => {
  cards.get(selected)?.root.classList.remove('selected');
  selected = null;
  $('panel').hidden = true;
});

// ---------- alerts ----------

let alertsTimer = 0;
function loadAlerts() {
  clearTimeout(alertsTimer);
  alertsTimer = setTimeout(() => {
    api('/api/silences')
      .then(renderSilences)
      .then(() => api('/api/alerts?limit=200'))
      .then(renderAlerts)
      .catch(() => undefined);
  }, 300);
}

function renderAlerts(alerts) {
  $('alert-count').textContent = String(alerts.length);
  $('alert-count').classList.toggle('none', alerts.length === 0);
  $('alert-list').replaceChildren(
    ...alerts.map((a) => {
      const li = el('li');
      li.append(
        el('span', `sev-${a.severity}`, a.severity),
        ' ',
        el('b', '', a.kind),
        ' ',
        el('span', '', a.message),
        el('br'),
        el(
          'small',
          '',
          `${new Date(a.raisedAt).toLocaleString()}${a.imei ? ` · ${a.imei}` : ''}${a.host ? ` · ${a.host}` : ''}`,
        ),
      );
      if (a.silenced) li.append(' ', el('small', 'silenced', 'silenced'));
      if (a.ackedAt) li.append(' ', el('small', 'acked', `ack ${a.ackedBy ?? ''}`));
      else {
        const ack = el('button', 'ack', 'ack');
        ack.type = 'button';
        ack.addEventListener('click', (e) => {
          e.stopPropagation();
          api(`/api/alerts/${a.id}/ack`, { method: 'POST' })
            .then(loadAlerts)
            .catch((err) => toast(`ack refused: ${err.message}`));
        });
        li.append(' ', ack);
      }
      if (a.imei) li.addEventListener('click', () => openPanel(a.imei));
      return li;
    }),
  );
}

function renderSilences(list) {
  silences.clear();
  for (const s of list) silences.set(s.imei, s.until);
  const text = list.map((s) => `${s.imei} until ${new Date(s.until).toLocaleString()}`).join(', ');
  $('silenced-list').textContent = `Silenced: ${text}`;
  $('silenced-list').hidden = list.length === 0;
  if (selected) renderPanelHead();
}

$('p-silence').addEventListener('click', async () => {
  const imei = selected;
  if (!imei) return;
  try {
    if (silences.has(imei)) await api(`/api/modems/${imei}/silence`, { method: 'DELETE' });
    else {
      const until = new Date(Date.now() + 2 * 3600_000).toISOString();
      await api(`/api/modems/${imei}/silence`, { method: 'POST', body: JSON.stringify({ until }) });
    }
    renderSilences(await api('/api/silences'));
  } catch (err) {
    toast(`silence refused: ${err.message}`);
  }
});

$('alerts-button').addEventListener('click', () => {
  $('alerts').hidden = !$('alerts').hidden;
  if (!$('alerts').hidden) $('panel').hidden = true;
});
$('alerts-close').addEventListener('click', () => {
  $('alerts').hidden = true;
});

function toast(text) {
  const t = el('div', '', text);
  $('toast').append(t);
  setTimeout(() => t.remove(), 5000);
}

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !$('confirm').open) {
    $('panel').hidden = true;
    $('alerts').hidden = true;
  }
  if (e.key === '/' && document.activeElement !== $('search')) {
    e.preventDefault();
    $('search').focus();
  }
});

token = readToken();
connect();
