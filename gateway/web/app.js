// missive web app: a client of WebSocket protocol v1 (docs/protocol.md),
// plain DOM, no framework, no build step (docs/webapp.md).
//
// Invariants:
// - Text from the network reaches the DOM only through textContent, never as
//   HTML (the page's CSP also forbids inline script).
// - The sync token in localStorage is the token of the last event *applied*,
//   so a reload or reconnect resumes with `subscribe {since}` and misses
//   nothing; events are deduplicated by (conversation, seq).
// - A message typed while offline sits in a localStorage outbox and is sent
//   with the same client_msg_id until the server answers (sends are
//   idempotent by client_msg_id), in the order it was typed.
// - Receipts are sent only up to the seq of a *message*, never of a receipt
//   event, so two open clients never acknowledge each other's receipts
//   forever.
'use strict';

(() => {
  // ---------------------------------------------------------------- helpers

  const $ = (sel) => document.querySelector(sel);

  /** Builds an element; children are nodes or strings (set as text). */
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : v);
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  /** Line icons drawn as SVG, so they look the same without an emoji font. */
  const ICONS = {
    react: 'M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18M8.5 14.5a4 4 0 0 0 7 0M9 9.5h.01M15 9.5h.01',
    edit: 'M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4',
    delete: 'M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13M10.5 11v5M13.5 11v5',
    clock: 'M12 4a8 8 0 1 0 0 16a8 8 0 1 0 0-16M12 8v4l3 2',
    photo: 'M4 8h3l2-3h6l2 3h3v11H4zM12 10a3.5 3.5 0 1 0 0 7a3.5 3.5 0 1 0 0-7',
  };

  function icon(name) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('class', `icon icon-${name}`);
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', ICONS[name]);
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', 'currentColor');
    path.setAttribute('stroke-width', '2');
    path.setAttribute('stroke-linecap', 'round');
    path.setAttribute('stroke-linejoin', 'round');
    svg.append(path);
    return svg;
  }

  const store = {
    get(key, fallback) {
      try {
        const v = localStorage.getItem(key);
        return v === null ? fallback : JSON.parse(v);
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, JSON.stringify(value));
      } catch {
        // Storage full or disabled: the app still works, it only forgets
        // across reloads.
      }
    },
    remove(key) {
      try {
        localStorage.removeItem(key);
      } catch {
        // As above.
      }
    },
  };

  function hash(s) {
    let x = 0;
    for (let i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) >>> 0;
    return x;
  }

  function avatar(name, cls, isGroup) {
    const a = h('span', { class: `avatar av-${hash(name) % 8}${isGroup ? ' group' : ''}${cls ? ' ' + cls : ''}` });
    a.textContent = initials(name);
    return a;
  }

  function initials(name) {
    const words = name.trim().split(/[\s._@-]+/).filter(Boolean);
    if (words.length === 0) return '?';
    if (words.length === 1) return Array.from(words[0])[0];
    return Array.from(words[0])[0] + Array.from(words[1])[0];
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
  const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
  const shortDateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

  function startOfDay(ms) {
    const d = new Date(ms);
    d.setHours(0, 0, 0, 0);
    return d.getTime();
  }

  function dayLabel(ms) {
    const today = startOfDay(Date.now());
    const day = startOfDay(ms);
    if (day === today) return 'Today';
    if (day === today - 86400000) return 'Yesterday';
    if (today - day < 6 * 86400000) return dayFmt.format(ms);
    return dateFmt.format(ms);
  }

  function listTime(ms) {
    if (!ms) return '';
    const today = startOfDay(Date.now());
    if (ms >= today) return timeFmt.format(ms);
    if (ms >= today - 86400000) return 'Yesterday';
    if (ms >= today - 6 * 86400000) return dayFmt.format(ms).slice(0, 3);
    return shortDateFmt.format(ms);
  }

  function lastSeen(ms) {
    if (!ms) return 'offline';
    const ago = Date.now() - ms;
    if (ago < 60000) return 'last seen just now';
    if (ago < 3600000) return `last seen ${Math.floor(ago / 60000)} min ago`;
    if (ms >= startOfDay(Date.now())) return `last seen today at ${timeFmt.format(ms)}`;
    if (ms >= startOfDay(Date.now()) - 86400000) return `last seen yesterday at ${timeFmt.format(ms)}`;
    return `last seen ${shortDateFmt.format(ms)}`;
  }

  let toastTimer = null;
  function toast(text) {
    const t = $('#toast');
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  const USER_RE = /^[A-Za-z0-9._@-]{1,64}$/;

  // ------------------------------------------------------------------ state

  /** Bounds, named so they are visible and documented. */
  const HISTORY_PAGE = 50;
  const OUTBOX_MAX = 500; // messages typed offline kept for sending
  const TYPING_SEND_EVERY_MS = 3000;
  const TYPING_IDLE_MS = 5000;
  const TYPING_SHOW_MS = 7000;
  const PING_EVERY_MS = 20000;
  const PONG_WITHIN_MS = 10000;
  const REQUEST_TIMEOUT_MS = 20000;
  const BACKOFF_MAX_MS = 15000;
  const EMOJIS = ['👍', '❤️', '😂', '😮', '😢', '🙏', '🎉', '🔥'];

  const state = {
    /** `{token, user}` from the login, kept in localStorage. */
    session: null,
    /** conversation_id → Conv (see `conv()`). */
    convs: new Map(),
    /** The open conversation's id. */
    current: null,
    /** user → `{online, last_seen_ms}`. */
    presence: new Map(),
    /** conversation_id → Map(user → time the indicator expires). */
    typing: new Map(),
    /** media_id → `{url, expires}` or `{promise}`. */
    media: new Map(),
    /** media_id → <img>, reused across renders so images do not reload. */
    images: new Map(),
    /** Unsent messages `{conversation_id, client_msg_id, content, created_ms, failed}`. */
    outbox: [],
    /** client_msg_id → outbox entry: sent, its `message_sent` event not seen yet. */
    awaiting: new Map(),
    /** The message being edited: `{conversation_id, seq}`. */
    editing: null,
    filter: '',
  };

  const me = () => state.session && state.session.user;
  const keyOf = (what) => `missive.${what}.${me()}`;

  function conv(id) {
    let c = state.convs.get(id);
    if (!c) {
      c = {
        id,
        info: null, // the conversation object, once known
        lastMessage: null,
        lastActivity: 0,
        unread: 0,
        readUpTo: 0,
        deliveredUpTo: 0,
        headSeq: 0, // the highest event seq reflected in this record
        lastMsgSeq: 0, // the highest *message* seq: receipts point here
        marks: new Map(), // member → {d, r}: their watermarks
        messages: new Map(), // seq → message
        more: true,
        loaded: false,
        loading: false,
        statusLoaded: false,
      };
      state.convs.set(id, c);
    }
    return c;
  }

  function members(c) {
    return c.info ? c.info.members.map((m) => m.user) : [];
  }

  function peerOf(c) {
    if (!c.info || c.info.kind !== 'direct') return null;
    return members(c).find((u) => u !== me()) || me();
  }

  function title(c) {
    if (!c.info) return '…';
    if (c.info.kind === 'direct') return peerOf(c);
    return c.info.name || members(c).join(', ');
  }

  function mark(c, user, d, r) {
    const m = c.marks.get(user) || { d: 0, r: 0 };
    m.d = Math.max(m.d, d, r);
    m.r = Math.max(m.r, r);
    c.marks.set(user, m);
  }

  // ------------------------------------------------------------- connection

  const conn = {
    ws: null,
    ready: false, // authenticated
    live: false, // caught up
    nextId: 1,
    pending: new Map(), // req_id → {resolve, reject, timer}
    attempts: 0,
    retryTimer: null,
    pingTimer: null,
    pongTimer: null,
    buffering: false,
    buffer: [],
  };

  class RequestError extends Error {
    constructor(code, message) {
      super(message || code);
      this.code = code;
    }
  }

  const RETRYABLE = new Set(['unavailable', 'timeout', 'rate_limited', 'resource_exhausted', 'disconnected']);

  function rawRequest(ws, type, fields) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new RequestError('disconnected', 'not connected'));
        return;
      }
      const req_id = conn.nextId++;
      const timer = setTimeout(() => {
        conn.pending.delete(req_id);
        reject(new RequestError('timeout', `${type}: no answer`));
      }, REQUEST_TIMEOUT_MS);
      conn.pending.set(req_id, { resolve, reject, timer });
      ws.send(JSON.stringify({ type, req_id, ...fields }));
    });
  }

  function request(type, fields = {}) {
    if (!conn.ready) return Promise.reject(new RequestError('disconnected', 'not connected'));
    return rawRequest(conn.ws, type, fields);
  }

  function setConnection(s) {
    document.body.dataset.connection = s;
    const label = { connecting: 'Connecting…', online: 'Online', offline: 'Waiting for network…' }[s];
    $('#conn-state').textContent = label;
    renderHeader();
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    if (!state.session) return;
    if (conn.ws && conn.ws.readyState <= WebSocket.OPEN) return;
    setConnection('connecting');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    conn.ws = ws;
    ws.onopen = () => {
      rawRequest(ws, 'auth', { token: state.session.token })
        .then(() => onAuthenticated(ws))
        .catch((e) => {
          if (e.code === 'unauthenticated') return; // the close (4001) follows
          ws.close();
        });
    };
    ws.onmessage = (msg) => {
      if (ws !== conn.ws) return;
      let f;
      try {
        f = JSON.parse(msg.data);
      } catch {
        return;
      }
      onFrame(f);
    };
    ws.onclose = (e) => {
      if (ws !== conn.ws) return;
      onDisconnected(e.code);
    };
  }

  function onDisconnected(code) {
    conn.ready = false;
    conn.live = false;
    conn.ws = null;
    clearInterval(conn.pingTimer);
    clearTimeout(conn.pongTimer);
    for (const [id, p] of conn.pending) {
      clearTimeout(p.timer);
      p.reject(new RequestError('disconnected', 'connection lost'));
      conn.pending.delete(id);
    }
    if (!state.session) return;
    if (code === 4001) {
      logout('Your session has expired. Please log in again.');
      return;
    }
    setConnection('offline');
    // Exponential backoff with jitter, so a restarted gateway is not hit by
    // every client at the same instant.
    const base = Math.min(BACKOFF_MAX_MS, 500 * 2 ** conn.attempts);
    conn.attempts = Math.min(conn.attempts + 1, 10);
    conn.retryTimer = setTimeout(connect, base / 2 + Math.random() * (base / 2));
  }

  async function onAuthenticated(ws) {
    if (ws !== conn.ws) return;
    document.body.dataset.connects = String(Number(document.body.dataset.connects || 0) + 1);
    conn.ready = true;
    conn.attempts = 0;
    setConnection('online');
    startHeartbeat(ws);
    // Events that arrive before the inbox is loaded wait, so the inbox's
    // unread counts and the replayed events are never counted twice.
    conn.buffering = true;
    conn.buffer = [];
    try {
      await request('subscribe', { since: store.get(keyOf('sync'), '') });
      await loadInbox();
    } catch (e) {
      if (ws === conn.ws) ws.close();
      return;
    } finally {
      conn.buffering = false;
      const buffered = conn.buffer;
      conn.buffer = [];
      for (const f of buffered) onFrame(f);
    }
    const c = state.current && state.convs.get(state.current);
    if (c) {
      if (!c.loaded) loadHistory(c);
      loadStatus(c);
      scheduleReceipt(c);
    }
    flushOutbox();
  }

  function startHeartbeat(ws) {
    clearInterval(conn.pingTimer);
    conn.pingTimer = setInterval(() => {
      if (ws !== conn.ws) return;
      const req_id = conn.nextId++;
      ws.send(JSON.stringify({ type: 'ping', req_id }));
      // No pong in time: the path is dead even if the socket looks open.
      conn.pongTimer = setTimeout(() => { if (ws === conn.ws) ws.close(); }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  function onFrame(f) {
    if (conn.buffering && (f.type === 'event' || f.type === 'caught_up' || f.type === 'resync')) {
      conn.buffer.push(f);
      return;
    }
    switch (f.type) {
      case 'result':
      case 'error': {
        const p = conn.pending.get(f.req_id);
        if (!p) return;
        conn.pending.delete(f.req_id);
        clearTimeout(p.timer);
        if (f.type === 'result') p.resolve(f.data);
        else p.reject(new RequestError(f.code, f.message));
        return;
      }
      case 'pong':
        clearTimeout(conn.pongTimer);
        return;
      case 'event':
        applyEvent(f.event);
        store.set(keyOf('sync'), f.token);
        return;
      case 'caught_up':
        conn.live = true;
        store.set(keyOf('sync'), f.token);
        return;
      case 'resync':
        store.set(keyOf('sync'), f.token);
        resync();
        return;
      default:
    }
  }

  /** The token's history is gone: forget what was loaded and load it again. */
  async function resync() {
    document.body.dataset.resyncs = String(Number(document.body.dataset.resyncs || 0) + 1);
    messageItems.clear();
    for (const c of state.convs.values()) {
      c.messages.clear();
      c.loaded = false;
      c.more = true;
      c.statusLoaded = false;
    }
    try {
      await loadInbox();
      const c = state.current && state.convs.get(state.current);
      if (c) {
        await loadHistory(c);
        loadStatus(c);
      }
    } catch {
      // A lost connection reloads on reconnect.
    }
    renderAll();
  }

  // ----------------------------------------------------------------- events

  function applyEvent(ev) {
    if (ev.kind === 'presence') {
      const p = ev.presence;
      state.presence.set(p.user, { online: p.online, last_seen_ms: p.last_seen_ms });
      renderList();
      renderHeader();
      return;
    }
    if (ev.kind === 'typing') {
      onTyping(ev.conversation_id, ev.typing.user, ev.typing.typing);
      return;
    }
    if (!ev.conversation_id) return;
    const c = conv(ev.conversation_id);
    const fresh = ev.seq > c.headSeq;
    switch (ev.kind) {
      case 'conversation_created':
        c.info = ev.conversation_created;
        c.lastActivity = Math.max(c.lastActivity, ev.timestamp_ms);
        requestPresence(members(c));
        break;
      case 'members_changed': {
        if (!c.info) break;
        const removed = new Set(ev.members_changed.removed);
        c.info.members = c.info.members.filter((m) => !removed.has(m.user));
        for (const m of ev.members_changed.added) {
          if (!c.info.members.some((x) => x.user === m.user)) c.info.members.push(m);
        }
        if (removed.has(me())) {
          state.convs.delete(c.id);
          if (state.current === c.id) closeConversation();
        }
        break;
      }
      case 'role_changed':
        if (c.info) {
          const m = c.info.members.find((x) => x.user === ev.role_changed.user);
          if (m) m.role = ev.role_changed.role;
        }
        break;
      case 'message_sent':
        onMessage(c, ev.message_sent, fresh);
        c.lastActivity = Math.max(c.lastActivity, ev.timestamp_ms);
        break;
      case 'message_edited': {
        const m = c.messages.get(ev.message_edited.target);
        const patch = (x) => { x.content = ev.message_edited.content; x.edited_ms = ev.timestamp_ms; };
        if (m) patch(m);
        if (c.lastMessage && c.lastMessage.seq === ev.message_edited.target) patch(c.lastMessage);
        break;
      }
      case 'message_deleted': {
        const patch = (x) => { x.deleted = true; x.content = { text: '', ciphertexts: [], media: null }; };
        const m = c.messages.get(ev.message_deleted.target);
        if (m) patch(m);
        if (c.lastMessage && c.lastMessage.seq === ev.message_deleted.target) patch(c.lastMessage);
        break;
      }
      case 'reaction_set': {
        const m = c.messages.get(ev.reaction_set.target);
        if (m) {
          m.reactions = m.reactions.filter((r) => r.user !== ev.actor);
          if (ev.reaction_set.emoji) m.reactions.push({ user: ev.actor, emoji: ev.reaction_set.emoji });
        }
        break;
      }
      case 'receipt': {
        const r = ev.receipt;
        mark(c, r.user, r.delivered_up_to, r.read_up_to);
        if (r.user === me()) {
          // Read on another device of mine.
          c.deliveredUpTo = Math.max(c.deliveredUpTo, r.delivered_up_to);
          c.readUpTo = Math.max(c.readUpTo, r.read_up_to);
          if (c.readUpTo >= c.lastMsgSeq) c.unread = 0;
        }
        break;
      }
      default:
    }
    if (ev.seq > c.headSeq) c.headSeq = ev.seq;
    if (state.convs.has(c.id) && !c.info) fetchConversation(c);
    renderList();
    if (state.current === c.id) renderChat();
  }

  function onMessage(c, m, fresh) {
    c.messages.set(m.seq, m);
    if (!c.lastMessage || m.seq >= c.lastMessage.seq) c.lastMessage = m;
    c.lastMsgSeq = Math.max(c.lastMsgSeq, m.seq);
    // A send moves the sender's own watermarks to its message.
    mark(c, m.sender, m.seq, m.seq);
    if (m.sender === me()) {
      state.awaiting.delete(m.client_msg_id);
      dropFromOutbox(m.client_msg_id);
      c.readUpTo = Math.max(c.readUpTo, m.seq);
      c.deliveredUpTo = Math.max(c.deliveredUpTo, m.seq);
    } else {
      if (fresh && m.seq > c.readUpTo && !visible(c)) c.unread += 1;
      setTypingOf(c.id, m.sender, false);
      scheduleReceipt(c);
    }
  }

  const fetching = new Set();
  async function fetchConversation(c) {
    if (fetching.has(c.id) || !conn.ready) return;
    fetching.add(c.id);
    try {
      c.info = await request('get_conversation', { conversation_id: c.id });
      requestPresence(members(c));
      renderList();
      if (state.current === c.id) renderChat();
    } catch {
      // Retried on the next event or reconnect.
    } finally {
      fetching.delete(c.id);
    }
  }

  async function loadInbox() {
    const r = await request('inbox', { limit: 500 });
    const seen = new Set();
    for (const e of r.entries) {
      if (!e.conversation) continue;
      const c = conv(e.conversation.conversation_id);
      seen.add(c.id);
      c.info = e.conversation;
      c.unread = e.unread;
      c.readUpTo = Math.max(c.readUpTo, e.read_up_to);
      c.deliveredUpTo = Math.max(c.deliveredUpTo, e.delivered_up_to);
      mark(c, me(), e.delivered_up_to, e.read_up_to);
      c.headSeq = Math.max(c.headSeq, e.conversation.last_seq);
      c.lastActivity = Math.max(c.lastActivity, e.last_activity_ms, e.conversation.created_ms);
      if (e.last_message) {
        const m = e.last_message;
        if (!c.lastMessage || m.seq >= c.lastMessage.seq) c.lastMessage = m;
        c.lastMsgSeq = Math.max(c.lastMsgSeq, m.seq);
        mark(c, m.sender, m.seq, m.seq);
        if (c.loaded) c.messages.set(m.seq, m);
      }
      // Messages that arrived while this client was away are delivered now.
      if (e.delivered_up_to < c.lastMsgSeq) scheduleReceipt(c);
    }
    for (const id of [...state.convs.keys()]) if (!seen.has(id)) state.convs.delete(id);
    const users = new Set();
    for (const c of state.convs.values()) for (const u of members(c)) if (u !== me()) users.add(u);
    requestPresence([...users]);
    renderList();
    if (state.current) {
      if (state.convs.has(state.current)) renderChat();
      else closeConversation();
    }
  }

  async function requestPresence(users) {
    const list = users.filter((u) => u !== me()).slice(0, 500);
    if (list.length === 0 || !conn.ready) return;
    try {
      const r = await request('presence', { users: list });
      for (const p of r.users) state.presence.set(p.user, { online: p.online, last_seen_ms: p.last_seen_ms });
      renderList();
      renderHeader();
    } catch {
      // Presence is a nicety: events keep it current anyway.
    }
  }

  async function loadHistory(c) {
    if (c.loading || !conn.ready) return;
    c.loading = true;
    $('#history-loader').hidden = state.current !== c.id || !c.loaded;
    const before = c.loaded ? Math.min(...c.messages.keys()) : 0;
    try {
      const r = await request('history', { conversation_id: c.id, before: Number.isFinite(before) ? before : 0, limit: HISTORY_PAGE });
      for (const m of r.messages) {
        c.messages.set(m.seq, m);
        c.lastMsgSeq = Math.max(c.lastMsgSeq, m.seq);
        mark(c, m.sender, m.seq, m.seq);
        if (m.sender === me()) state.awaiting.delete(m.client_msg_id);
      }
      c.more = r.more;
      c.loaded = true;
    } catch (e) {
      if (e.code !== 'disconnected') toast(`Could not load messages: ${e.message}`);
    } finally {
      c.loading = false;
      $('#history-loader').hidden = true;
    }
    if (state.current === c.id) {
      renderChat({ keepBottomDistance: true });
      fillViewport(c);
      loadStatus(c);
    }
  }

  /** Loads older pages until the view can scroll (so scrolling up can page). */
  function fillViewport(c) {
    const box = $('#messages');
    if (c.more && c.loaded && box.scrollHeight <= box.clientHeight + 40) loadHistory(c);
  }

  /** The other members' watermarks, from the status of my last message. */
  async function loadStatus(c) {
    if (c.statusLoaded || !conn.ready) return;
    const own = [...c.messages.values()].filter((m) => m.sender === me()).map((m) => m.seq);
    if (c.lastMessage && c.lastMessage.sender === me()) own.push(c.lastMessage.seq);
    if (own.length === 0) return;
    try {
      const r = await request('message_status', { conversation_id: c.id, seq: Math.max(...own) });
      for (const m of r.members) mark(c, m.user, m.delivered_up_to, m.read_up_to);
      c.statusLoaded = true;
      if (state.current === c.id) renderChat();
    } catch {
      // Ticks then follow receipts only.
    }
  }

  // ---------------------------------------------------------------- receipts

  const receiptTimers = new Map();
  function visible(c) {
    return state.current === c.id && document.visibilityState === 'visible';
  }

  /** Acknowledges a conversation's messages: read if it is on screen, else delivered. */
  function scheduleReceipt(c) {
    if (receiptTimers.has(c.id)) return;
    receiptTimers.set(c.id, setTimeout(async () => {
      receiptTimers.delete(c.id);
      if (!conn.ready || !state.convs.has(c.id)) return;
      const upTo = c.lastMsgSeq;
      try {
        if (visible(c) && upTo > c.readUpTo) {
          await request('mark_read', { conversation_id: c.id, up_to: upTo });
          c.readUpTo = Math.max(c.readUpTo, upTo);
          c.deliveredUpTo = Math.max(c.deliveredUpTo, upTo);
          c.unread = 0;
          renderList();
        } else if (upTo > c.deliveredUpTo) {
          await request('mark_delivered', { conversation_id: c.id, up_to: upTo });
          c.deliveredUpTo = Math.max(c.deliveredUpTo, upTo);
        }
      } catch {
        // Sent again on the next message or reconnect.
      }
    }, 150));
  }

  // ------------------------------------------------------------------ typing

  function setTypingOf(convId, user, on) {
    let m = state.typing.get(convId);
    if (!m) {
      if (!on) return;
      m = new Map();
      state.typing.set(convId, m);
    }
    if (on) m.set(user, Date.now() + TYPING_SHOW_MS);
    else m.delete(user);
  }

  function onTyping(convId, user, on) {
    if (user === me()) return;
    setTypingOf(convId, user, on);
    renderTyping();
  }

  function typers(convId) {
    const m = state.typing.get(convId);
    if (!m) return [];
    const now = Date.now();
    for (const [u, until] of m) if (until < now) m.delete(u);
    return [...m.keys()];
  }

  function typingText(c) {
    const t = typers(c.id);
    if (t.length === 0) return '';
    if (c.info && c.info.kind === 'direct') return 'typing…';
    if (t.length === 1) return `${t[0]} is typing…`;
    if (t.length === 2) return `${t[0]} and ${t[1]} are typing…`;
    return 'several people are typing…';
  }

  const composing = { lastSent: 0, idleTimer: null, convId: null };
  function onComposerInput() {
    autosize();
    const id = state.current;
    if (!id || state.editing) return;
    const now = Date.now();
    if (now - composing.lastSent > TYPING_SEND_EVERY_MS || composing.convId !== id) {
      composing.lastSent = now;
      composing.convId = id;
      request('typing', { conversation_id: id, typing: true }).catch(() => {});
    }
    clearTimeout(composing.idleTimer);
    composing.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(composing.idleTimer);
    if (!composing.convId || composing.lastSent === 0) return;
    const id = composing.convId;
    composing.lastSent = 0;
    composing.convId = null;
    request('typing', { conversation_id: id, typing: false }).catch(() => {});
  }

  // ------------------------------------------------------------------ outbox

  function saveOutbox() {
    store.set(keyOf('outbox'), state.outbox);
  }

  function dropFromOutbox(clientMsgId) {
    const n = state.outbox.length;
    state.outbox = state.outbox.filter((o) => o.client_msg_id !== clientMsgId);
    if (state.outbox.length !== n) saveOutbox();
  }

  function queueSend(convId, content) {
    if (state.outbox.length >= OUTBOX_MAX) {
      toast('Too many unsent messages: wait for the connection to return.');
      return;
    }
    state.outbox.push({ conversation_id: convId, client_msg_id: newId(), content, created_ms: Date.now(), failed: false });
    saveOutbox();
    const c = conv(convId);
    c.lastActivity = Date.now();
    renderList();
    if (state.current === convId) renderChat({ toBottom: true });
    flushOutbox();
  }

  let flushing = false;
  let flushRetry = null;
  /** Sends queued messages one by one, in order, with their client_msg_id. */
  async function flushOutbox() {
    if (flushing || !conn.ready) return;
    flushing = true;
    clearTimeout(flushRetry);
    try {
      for (const o of [...state.outbox]) {
        if (o.failed) continue;
        try {
          const r = await request('send', {
            conversation_id: o.conversation_id,
            client_msg_id: o.client_msg_id,
            content: o.content,
            reply_to: 0,
          });
          const c = state.convs.get(o.conversation_id);
          if (!c || !c.messages.has(r.seq)) state.awaiting.set(o.client_msg_id, o);
          dropFromOutbox(o.client_msg_id);
        } catch (e) {
          if (RETRYABLE.has(e.code)) {
            // Stays queued; retried soon or on reconnect.
            if (e.code !== 'disconnected') flushRetry = setTimeout(flushOutbox, 2000);
            break;
          }
          o.failed = true;
          o.error = e.message;
          saveOutbox();
          toast(`Message not sent: ${e.message}`);
        }
        if (state.current === o.conversation_id) renderChat();
      }
    } finally {
      flushing = false;
    }
    if (state.current) renderChat();
  }

  function retryFailed(clientMsgId) {
    const o = state.outbox.find((x) => x.client_msg_id === clientMsgId);
    if (!o) return;
    o.failed = false;
    saveOutbox();
    renderChat();
    flushOutbox();
  }

  // ------------------------------------------------------------------- media

  async function sha256Hex(buf) {
    const d = await crypto.subtle.digest('SHA-256', buf);
    return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function uploadImage(file) {
    const convId = state.current;
    if (!convId) return;
    if (!file.type.startsWith('image/')) {
      toast('Only images can be sent.');
      return;
    }
    const composer = $('#composer');
    composer.classList.add('busy');
    try {
      const buf = await file.arrayBuffer();
      const sha256 = await sha256Hex(buf);
      const slot = await request('media_upload', { sha256, size: buf.byteLength, mime_type: file.type });
      const res = await fetch(slot.upload_url, {
        method: 'PUT',
        body: buf,
        headers: { 'Content-Type': file.type },
        credentials: 'omit',
      });
      if (!res.ok) throw new Error(`upload refused (${res.status})`);
      queueSend(convId, {
        media: { media_id: slot.media_id, mime_type: file.type, size: buf.byteLength, name: file.name || 'image' },
      });
    } catch (e) {
      toast(`Could not send the image: ${e.message}`);
    } finally {
      composer.classList.remove('busy');
    }
  }

  function expiresAt(ms) {
    // An absolute time, or a lifetime from now.
    return ms > 1e12 ? ms : Date.now() + ms;
  }

  function mediaUrl(media, force) {
    const cached = state.media.get(media.media_id);
    if (!force && cached) {
      if (cached.promise) return cached.promise;
      if (cached.expires - 5000 > Date.now()) return Promise.resolve(cached.url);
    }
    const promise = request('media_url', { media_id: media.media_id, mime_type: media.mime_type })
      .then((r) => {
        state.media.set(media.media_id, { url: r.url, expires: expiresAt(r.expires_ms) });
        return r.url;
      })
      .catch((e) => {
        state.media.delete(media.media_id);
        throw e;
      });
    state.media.set(media.media_id, { promise });
    return promise;
  }

  function imageFor(media) {
    let img = state.images.get(media.media_id);
    if (img) return img;
    img = h('img', { class: 'msg-image', alt: media.name || 'image', dataset: { mediaId: media.media_id } });
    let refreshed = false;
    const load = (force) => mediaUrl(media, force).then((u) => { img.src = u; }).catch(() => {
      // Not connected yet: try again when the connection returns.
      setTimeout(() => load(true), 3000);
    });
    img.addEventListener('error', () => {
      // An expired URL: fetch a fresh one once.
      if (refreshed) return;
      refreshed = true;
      load(true);
    });
    img.addEventListener('load', () => {
      const box = $('#messages');
      if (box.scrollHeight - box.scrollTop - box.clientHeight < 400) box.scrollTop = box.scrollHeight;
    });
    img.addEventListener('click', () => openLightbox(img.src));
    load(false);
    state.images.set(media.media_id, img);
    return img;
  }

  function openLightbox(src) {
    if (!src) return;
    const box = $('#lightbox');
    box.replaceChildren(h('img', { src, alt: '' }));
    box.hidden = false;
  }

  // ----------------------------------------------------------------- actions

  async function act(type, fields, failure) {
    try {
      return await request(type, fields);
    } catch (e) {
      toast(`${failure}: ${e.code === 'disconnected' ? 'offline' : e.message}`);
      return null;
    }
  }

  function startEdit(c, m) {
    state.editing = { conversation_id: c.id, seq: m.seq };
    const input = $('#composer-input');
    input.value = m.content.text;
    $('#edit-bar').hidden = false;
    input.focus();
    autosize();
  }

  function cancelEdit() {
    state.editing = null;
    $('#edit-bar').hidden = true;
    $('#composer-input').value = '';
    autosize();
  }

  async function deleteMessage(c, m) {
    if (!window.confirm('Delete this message for everyone?')) return;
    await act('delete', { conversation_id: c.id, seq: m.seq }, 'Could not delete');
  }

  function openEmojiPicker(anchor, c, m) {
    const picker = $('#emoji-picker');
    const mine = m.reactions.find((r) => r.user === me());
    picker.replaceChildren(...EMOJIS.map((e) => h('button', {
      type: 'button',
      class: 'emoji',
      dataset: { emoji: e },
      text: e,
      onclick: () => {
        picker.hidden = true;
        act('react', { conversation_id: c.id, seq: m.seq, emoji: mine && mine.emoji === e ? '' : e }, 'Could not react');
      },
    })));
    picker.hidden = false;
    place(picker, anchor);
  }

  function place(popup, anchor) {
    const r = anchor.getBoundingClientRect();
    const w = popup.offsetWidth;
    const hgt = popup.offsetHeight;
    const left = Math.max(8, Math.min(window.innerWidth - w - 8, r.left + r.width / 2 - w / 2));
    const top = r.top - hgt - 8 > 8 ? r.top - hgt - 8 : r.bottom + 8;
    popup.style.left = `${left}px`;
    popup.style.top = `${top}px`;
  }

  async function showStatus(anchor, c, m) {
    const pop = $('#status-popover');
    const r = await act('message_status', { conversation_id: c.id, seq: m.seq }, 'Could not load the status');
    if (!r) return;
    for (const x of r.members) mark(c, x.user, x.delivered_up_to, x.read_up_to);
    const rows = r.members.filter((x) => x.user !== me()).map((x) => {
      const st = x.read ? 'read' : x.delivered ? 'delivered' : 'sent';
      const label = { read: '✓✓ Read', delivered: '✓✓ Delivered', sent: '✓ Sent' }[st];
      return h('li', { dataset: { user: x.user, state: st } }, h('span', { text: x.user }), h('span', { class: `st-${st}`, text: label }));
    });
    pop.replaceChildren(h('h3', { text: 'Message info' }), h('ul', null, rows));
    pop.hidden = false;
    place(pop, anchor);
    renderChat();
  }

  async function createChat(e) {
    e.preventDefault();
    const err = $('#new-chat-error');
    err.textContent = '';
    const group = !$('#pane-group').hidden;
    let conversation;
    try {
      if (group) {
        const name = $('#new-group-name').value.trim();
        const users = $('#new-group-members').value.split(/[\s,]+/).filter(Boolean);
        if (!name) throw new Error('Give the group a name.');
        const bad = users.find((u) => !USER_RE.test(u));
        if (bad) throw new Error(`"${bad}" is not a valid user name.`);
        conversation = await request('create_group', { name, members: users.filter((u) => u !== me()) });
      } else {
        const peer = $('#new-direct-peer').value.trim();
        if (!USER_RE.test(peer)) throw new Error('Enter a user name (letters, digits, . _ - @).');
        conversation = await request('create_direct', { peer });
      }
    } catch (x) {
      err.textContent = x.code === 'disconnected' ? 'Offline: try again when connected.' : x.message;
      return;
    }
    $('#new-chat-dialog').close();
    const c = conv(conversation.conversation_id);
    c.info = conversation;
    c.headSeq = Math.max(c.headSeq, conversation.last_seq);
    c.lastActivity = Math.max(c.lastActivity, conversation.created_ms, Date.now());
    requestPresence(members(c));
    openConversation(c.id);
  }

  function openNewChat() {
    $('#new-chat-form').reset();
    $('#new-chat-error').textContent = '';
    selectTab('direct');
    $('#new-chat-dialog').showModal();
    $('#new-direct-peer').focus();
  }

  function selectTab(tab) {
    for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.dataset.tab === tab);
    $('#pane-direct').hidden = tab !== 'direct';
    $('#pane-group').hidden = tab !== 'group';
    $(tab === 'direct' ? '#new-direct-peer' : '#new-group-name').focus();
  }

  function openConversation(id) {
    if (state.current !== id) {
      stopTyping();
      if (state.editing) cancelEdit();
    }
    state.current = id;
    const c = conv(id);
    document.body.classList.add('chat-open');
    $('#chat-empty').hidden = true;
    $('#chat-pane').hidden = false;
    renderList();
    renderChat({ toBottom: true });
    if (!c.loaded) loadHistory(c);
    else fillViewport(c);
    loadStatus(c);
    scheduleReceipt(c);
    if (window.matchMedia('(min-width: 761px)').matches) $('#composer-input').focus();
  }

  function closeConversation() {
    stopTyping();
    state.current = null;
    document.body.classList.remove('chat-open');
    $('#chat-pane').hidden = true;
    $('#chat-empty').hidden = false;
    renderList();
  }

  function submitComposer(e) {
    e.preventDefault();
    const input = $('#composer-input');
    const text = input.value.replace(/^\s+|\s+$/g, '');
    const c = state.current && state.convs.get(state.current);
    if (!c) return;
    if (state.editing) {
      const { seq } = state.editing;
      cancelEdit();
      if (text) act('edit', { conversation_id: c.id, seq, content: { text } }, 'Could not edit');
      return;
    }
    if (!text) return;
    input.value = '';
    autosize();
    stopTyping();
    queueSend(c.id, { text });
  }

  function autosize() {
    const t = $('#composer-input');
    t.style.height = 'auto';
    t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
  }

  // --------------------------------------------------------------- rendering

  /** The newest message still in the outbox, if it is newer than the last sent one. */
  function queuedLast(c) {
    const queued = state.outbox.filter((o) => o.conversation_id === c.id).pop();
    if (queued && queued.content.text && (!c.lastMessage || queued.created_ms >= c.lastMessage.sent_ms)) return queued;
    return null;
  }

  function preview(c) {
    const queued = queuedLast(c);
    if (queued) return `You: ${queued.content.text.replace(/\s+/g, ' ')}`;
    const m = c.lastMessage;
    if (!m) return c.info && c.info.kind === 'group' ? 'Group created' : 'No messages yet';
    let body;
    if (m.deleted) body = 'Message deleted';
    else if (m.content.media) body = 'Photo';
    else if (m.content.text) body = m.content.text.replace(/\s+/g, ' ');
    else body = '🔒 Encrypted message';
    if (m.sender === me()) return `You: ${body}`;
    if (c.info && c.info.kind === 'group') return `${m.sender}: ${body}`;
    return body;
  }

  function previewElement(c, typing) {
    if (typing) return h('span', { class: 'conv-preview typing', text: typing });
    const m = c.lastMessage;
    const photo = !queuedLast(c) && m && !m.deleted && m.content.media;
    return h('span', { class: 'conv-preview' }, photo ? icon('photo') : null, preview(c));
  }

  function sortedConvs() {
    return [...state.convs.values()]
      .filter((c) => c.info)
      .sort((a, b) => b.lastActivity - a.lastActivity || a.id.localeCompare(b.id));
  }

  /** conversation_id → its list item. */
  const listItems = new Map();

  function renderList() {
    if (!state.session) return;
    const list = $('#conv-list');
    const filter = state.filter.toLowerCase();
    const all = sortedConvs();
    for (const id of listItems.keys()) if (!state.convs.has(id)) listItems.delete(id);
    const items = all.filter((c) => !filter || title(c).toLowerCase().includes(filter)).map((c) => {
      const t = title(c);
      const peer = peerOf(c);
      const online = peer && state.presence.get(peer) && state.presence.get(peer).online;
      const av = avatar(t, null, c.info.kind === 'group');
      if (online) av.append(h('span', { class: 'presence-dot', title: 'online' }));
      const typing = typingText(c);
      // One <li> per conversation for its whole life: a click that lands
      // while an event re-renders the list still reaches it.
      let li = listItems.get(c.id);
      if (!li) {
        li = h('li', { onclick: () => openConversation(c.id) });
        listItems.set(c.id, li);
      }
      li.className = `conv-item${c.id === state.current ? ' active' : ''}${c.unread > 0 ? ' has-unread' : ''}`;
      Object.assign(li.dataset, { conversationId: c.id, title: t, unread: String(c.unread), online: online ? 'true' : 'false' });
      li.replaceChildren(
      av,
      h('div', { class: 'conv-body' },
        h('div', { class: 'conv-top' },
          h('span', { class: 'conv-title', text: t }),
          h('time', { class: 'conv-time', text: listTime(c.lastActivity) })),
        h('div', { class: 'conv-bottom' },
          previewElement(c, typing),
          c.unread > 0 ? h('span', { class: 'conv-unread', text: c.unread > 999 ? '999+' : String(c.unread) }) : null)));
      return li;
    });
    list.replaceChildren(...items);
    $('#conv-empty').hidden = all.length > 0;
    const unread = all.reduce((n, c) => n + (c.unread > 0 ? 1 : 0), 0);
    document.title = unread > 0 ? `(${unread}) missive` : 'missive';
  }

  function renderHeader() {
    const c = state.current && state.convs.get(state.current);
    if (!c) return;
    const t = title(c);
    $('#chat-title').textContent = t;
    const av = $('#chat-avatar');
    av.className = `avatar av-${hash(t) % 8}${c.info && c.info.kind === 'group' ? ' group' : ''}`;
    av.textContent = initials(t);
    const pres = $('#chat-presence');
    const peer = peerOf(c);
    if (!conn.ready) {
      // Presence is unknown while this client is itself offline.
      pres.textContent = 'waiting for network…';
      pres.classList.remove('online');
      pres.dataset.online = 'false';
    } else if (peer) {
      const p = state.presence.get(peer);
      const online = !!(p && p.online);
      pres.textContent = online ? 'online' : p ? lastSeen(p.last_seen_ms) : '';
      pres.classList.toggle('online', online);
      pres.dataset.online = online ? 'true' : 'false';
    } else if (c.info) {
      const ms = members(c);
      const on = ms.filter((u) => u !== me() && state.presence.get(u) && state.presence.get(u).online).length;
      pres.textContent = `${ms.length} members${on ? `, ${on} online` : ''}`;
      pres.classList.remove('online');
      pres.dataset.online = 'false';
    }
    renderTypingHeader(c);
  }

  function renderTypingHeader(c) {
    const ind = $('#typing-indicator');
    const t = typers(c.id);
    if (t.length === 0) {
      ind.hidden = true;
      ind.textContent = '';
      return;
    }
    ind.textContent = t.length === 1 ? `${t[0]} is typing…` : typingText(c);
    ind.hidden = false;
  }

  let typingTimer = null;
  function renderTyping() {
    renderList();
    const c = state.current && state.convs.get(state.current);
    if (c) renderTypingHeader(c);
    // Indicators fade out by themselves when no "stopped" arrives.
    clearTimeout(typingTimer);
    const any = [...state.typing.keys()].some((id) => typers(id).length > 0);
    if (any) typingTimer = setTimeout(renderTyping, 1000);
  }

  function tickState(c, m) {
    const others = members(c).filter((u) => u !== me());
    if (others.length === 0) return 'sent';
    const marks = others.map((u) => c.marks.get(u) || { d: 0, r: 0 });
    if (marks.every((x) => x.r >= m.seq)) return 'read';
    if (marks.every((x) => x.d >= m.seq)) return 'delivered';
    return 'sent';
  }

  const TICKS = { sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

  function messageItem(c, m, prev) {
    const own = m.sender === me();
    const group = c.info && c.info.kind === 'group';
    const cont = prev && prev.sender === m.sender && m.sent_ms - prev.sent_ms < 5 * 60000 &&
      startOfDay(prev.sent_ms) === startOfDay(m.sent_ms);
    const media = !m.deleted && m.content.media;
    const bubble = h('div', { class: 'bubble' });
    if (group && !own && !cont) bubble.append(h('div', { class: `msg-sender c-${hash(m.sender) % 8}`, text: m.sender }));
    if (media) bubble.append(h('div', { class: 'msg-image-wrap' }, imageFor(media)));
    let text;
    if (m.deleted) text = 'This message was deleted';
    else if (media) text = '';
    else if (m.content.text) text = m.content.text;
    else text = '🔒 Encrypted message';
    bubble.append(h('div', { class: 'msg-text', text }));
    const meta = h('span', { class: 'msg-meta' });
    if (m.edited_ms && !m.deleted) meta.append(h('span', { class: 'msg-edited', text: 'edited' }));
    meta.append(h('time', { datetime: new Date(m.sent_ms).toISOString(), text: timeFmt.format(m.sent_ms) }));
    if (own && !m.deleted) {
      const st = tickState(c, m);
      const ticks = h('span', { class: `ticks${group ? ' clickable' : ''}`, dataset: { state: st }, title: st, text: TICKS[st] });
      if (group) ticks.addEventListener('click', (e) => { e.stopPropagation(); showStatus(ticks, c, m); });
      meta.append(ticks);
    }
    bubble.append(meta);
    const li = h('li', {
      class: `msg${own ? ' own' : ''}${cont ? ' cont' : ''}${m.deleted ? ' deleted' : ''}${media ? ' image-only' : ''}`,
      dataset: { seq: String(m.seq), sender: m.sender, clientMsgId: m.client_msg_id },
    }, bubble);
    if (m.reactions.length > 0 && !m.deleted) {
      const counts = new Map();
      for (const r of m.reactions) counts.set(r.emoji, (counts.get(r.emoji) || []).concat(r.user));
      li.append(h('div', { class: 'reactions' }, [...counts].map(([emoji, users]) => h('button', {
        type: 'button',
        class: `reaction${users.includes(me()) ? ' mine' : ''}`,
        title: users.join(', '),
        dataset: { emoji },
        text: users.length > 1 ? `${emoji} ${users.length}` : emoji,
        onclick: () => act('react', { conversation_id: c.id, seq: m.seq, emoji: users.includes(me()) ? '' : emoji }, 'Could not react'),
      }))));
    }
    if (!m.deleted) {
      const actions = h('div', { class: 'msg-actions' });
      const react = h('button', { type: 'button', class: 'act-react', title: 'React', 'aria-label': 'React' }, icon('react'));
      react.addEventListener('click', (e) => { e.stopPropagation(); openEmojiPicker(react, c, m); });
      actions.append(react);
      if (own && !media && m.content.text) {
        actions.append(h('button', { type: 'button', class: 'act-edit', title: 'Edit', 'aria-label': 'Edit', onclick: () => startEdit(c, m) }, icon('edit')));
      }
      if (own || (c.info && c.info.members.some((x) => x.user === me() && x.role === 'admin'))) {
        actions.append(h('button', { type: 'button', class: 'act-delete', title: 'Delete', 'aria-label': 'Delete', onclick: () => deleteMessage(c, m) }, icon('delete')));
      }
      li.append(actions);
      li.addEventListener('click', (e) => {
        if (e.target.closest('button, img')) return;
        for (const x of document.querySelectorAll('.msg.show-actions')) if (x !== li) x.classList.remove('show-actions');
        li.classList.toggle('show-actions');
      });
    }
    return li;
  }

  /** `conversation_id/seq` → `{key, li}`: a message is rebuilt only when what it shows changed. */
  const messageItems = new Map();

  function cachedMessageItem(c, m, prev) {
    const cont = prev && prev.sender === m.sender && m.sent_ms - prev.sent_ms < 5 * 60000;
    const admin = c.info && c.info.members.some((x) => x.user === me() && x.role === 'admin');
    const key = JSON.stringify([m.content, m.edited_ms, m.deleted, m.reactions, m.sender === me() && tickState(c, m), cont, admin, c.info && c.info.kind]);
    const id = `${c.id}/${m.seq}`;
    const cached = messageItems.get(id);
    if (cached && cached.key === key) return cached.li;
    const li = messageItem(c, m, prev);
    messageItems.set(id, { key, li });
    return li;
  }

  function pendingItem(c, o) {
    const media = o.content.media;
    const st = o.failed ? 'failed' : state.awaiting.has(o.client_msg_id) ? 'sent' : 'pending';
    const bubble = h('div', { class: 'bubble' });
    if (media) bubble.append(h('div', { class: 'msg-image-wrap' }, imageFor(media)));
    bubble.append(h('div', { class: 'msg-text', text: o.content.text || '' }));
    bubble.append(h('span', { class: 'msg-meta' },
      h('time', { text: timeFmt.format(o.created_ms) }),
      h('span', { class: 'ticks', dataset: { state: st }, title: st === 'pending' ? 'waiting for the connection' : st },
        st === 'pending' ? icon('clock') : TICKS[st])));
    const li = h('li', {
      class: `msg own pending${o.failed ? ' failed' : ''}`,
      dataset: { clientMsgId: o.client_msg_id, state: st },
    }, bubble);
    if (o.failed) {
      li.append(h('button', { type: 'button', class: 'msg-retry', text: `Not sent (${o.error || 'error'}). Retry`, onclick: () => retryFailed(o.client_msg_id) }));
    }
    return li;
  }

  function renderChat(opts = {}) {
    const c = state.current && state.convs.get(state.current);
    if (!c) return;
    renderHeader();
    const box = $('#messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    const fromBottom = box.scrollHeight - box.scrollTop;
    const items = [];
    let prev = null;
    let day = null;
    const msgs = [...c.messages.values()].sort((a, b) => a.seq - b.seq);
    const shown = new Set(msgs.map((m) => m.client_msg_id).filter(Boolean));
    for (const m of msgs) {
      const d = startOfDay(m.sent_ms);
      if (d !== day) {
        day = d;
        prev = null;
        items.push(h('li', { class: 'day-separator' }, h('span', { text: dayLabel(m.sent_ms) })));
      }
      items.push(cachedMessageItem(c, m, prev));
      prev = m;
    }
    for (const o of state.outbox) {
      if (o.conversation_id === c.id && !shown.has(o.client_msg_id)) items.push(pendingItem(c, o));
    }
    for (const [cid, o] of state.awaiting) {
      if (o.conversation_id === c.id && !shown.has(cid)) items.push(pendingItem(c, o));
    }
    $('#message-list').replaceChildren(...items);
    if (opts.toBottom || atBottom) box.scrollTop = box.scrollHeight;
    else if (opts.keepBottomDistance) box.scrollTop = box.scrollHeight - fromBottom;
  }

  function renderAll() {
    renderList();
    renderChat();
  }

  // ----------------------------------------------------------------- session

  async function login(e) {
    e.preventDefault();
    const err = $('#login-error');
    err.textContent = '';
    const user = $('#login-name').value.trim();
    if (!USER_RE.test(user)) {
      err.textContent = 'Use 1–64 letters, digits or . _ - @';
      return;
    }
    $('#login-submit').disabled = true;
    try {
      const res = await fetch('/dev/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user }),
      });
      if (res.status === 404) throw new Error('Development login is off on this server.');
      if (!res.ok) throw new Error(`Login refused (${res.status}).`);
      const body = await res.json();
      start({ token: body.token, user: body.user || user });
    } catch (x) {
      err.textContent = x.message;
    } finally {
      $('#login-submit').disabled = false;
    }
  }

  function start(session) {
    state.session = session;
    store.set('missive.session', session);
    state.outbox = store.get(keyOf('outbox'), []);
    document.body.dataset.view = 'main';
    $('#login-screen').hidden = true;
    $('#main-screen').hidden = false;
    $('#me-name').textContent = session.user;
    const av = $('#me-avatar');
    av.className = `avatar small av-${hash(session.user) % 8}`;
    av.textContent = initials(session.user);
    renderList();
    connect();
  }

  function logout(message) {
    stopTyping();
    store.remove('missive.session');
    state.session = null;
    const ws = conn.ws;
    conn.ws = null;
    conn.ready = false;
    if (ws) ws.close(1000);
    clearTimeout(conn.retryTimer);
    clearInterval(conn.pingTimer);
    state.convs.clear();
    state.current = null;
    state.presence.clear();
    state.typing.clear();
    state.media.clear();
    state.images.clear();
    messageItems.clear();
    listItems.clear();
    state.outbox = [];
    document.body.dataset.view = 'login';
    document.body.classList.remove('chat-open');
    $('#main-screen').hidden = true;
    $('#chat-pane').hidden = true;
    $('#chat-empty').hidden = false;
    $('#login-screen').hidden = false;
    $('#login-error').textContent = message || '';
    $('#login-name').focus();
  }

  // ------------------------------------------------------------------ wiring

  function wire() {
    $('#login-form').addEventListener('submit', login);
    $('#logout-btn').addEventListener('click', () => logout());
    $('#new-chat-btn').addEventListener('click', openNewChat);
    $('#conv-empty-new').addEventListener('click', openNewChat);
    $('#new-chat-cancel').addEventListener('click', () => $('#new-chat-dialog').close());
    $('#new-chat-form').addEventListener('submit', createChat);
    for (const t of document.querySelectorAll('.tab')) t.addEventListener('click', () => selectTab(t.dataset.tab));
    $('#conv-filter').addEventListener('input', (e) => { state.filter = e.target.value; renderList(); });
    $('#back-btn').addEventListener('click', closeConversation);
    $('#composer').addEventListener('submit', submitComposer);
    const input = $('#composer-input');
    input.addEventListener('input', onComposerInput);
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $('#composer').requestSubmit();
      } else if (e.key === 'Escape' && state.editing) {
        cancelEdit();
      }
    });
    input.addEventListener('blur', stopTyping);
    input.addEventListener('paste', (e) => {
      const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith('image/'));
      if (files.length === 0) return;
      e.preventDefault();
      for (const f of files) uploadImage(f);
    });
    $('#edit-cancel').addEventListener('click', cancelEdit);
    $('#attach-btn').addEventListener('click', () => $('#file-input').click());
    $('#file-input').addEventListener('change', (e) => {
      const files = [...e.target.files];
      e.target.value = '';
      for (const f of files) uploadImage(f);
    });
    $('#messages').addEventListener('scroll', () => {
      const c = state.current && state.convs.get(state.current);
      if (c && c.more && c.loaded && $('#messages').scrollTop < 120) loadHistory(c);
    });
    $('#lightbox').addEventListener('click', () => { $('#lightbox').hidden = true; });
    document.addEventListener('click', (e) => {
      if (!e.target.closest('#emoji-picker, .act-react')) $('#emoji-picker').hidden = true;
      if (!e.target.closest('#status-popover, .ticks')) $('#status-popover').hidden = true;
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        $('#emoji-picker').hidden = true;
        $('#status-popover').hidden = true;
        $('#lightbox').hidden = true;
      }
    });
    document.addEventListener('visibilitychange', () => {
      const c = state.current && state.convs.get(state.current);
      if (c && document.visibilityState === 'visible') scheduleReceipt(c);
    });
    window.addEventListener('online', () => {
      conn.attempts = 0;
      connect();
    });
    // Relative times ("last seen 3 min ago", list times) age.
    setInterval(() => { if (state.session) { renderList(); renderHeader(); } }, 30000);
  }

  wire();
  const saved = store.get('missive.session', null);
  if (saved && saved.token && saved.user) start(saved);
  else $('#login-name').focus();
})();
