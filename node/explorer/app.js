// qchain explorer: one hand-written script, no dependencies, no build step.
//
// Views are chosen by the URL fragment (#/, #/block/H, #/tx/HASH, #/receipt/HASH,
// #/account/ADDR, #/anchor/DIGEST). Data comes from this node's public API; blocks and
// transaction results arrive live over the server-sent event stream /v1/events, and the
// node and QKD figures are polled once a second. Chain data is put on the page as text
// only (never as HTML).
//
// Every word a person reads comes from a message catalogue (messages.en.json,
// messages.zh-CN.json, served beside this script) through t(); dates and numbers are
// formatted with Intl for the chosen locale. The locale follows the browser's languages
// (any zh* is Simplified Chinese, else English) until the person picks one in the header;
// the pick is kept in localStorage.
"use strict";

(() => {
  const POLL_MS = 1000;
  const KEEP_BLOCKS = 20;
  const KEEP_TXS = 20;
  const KEEP_SAMPLES = 120;

  // --- language ------------------------------------------------------------------------

  const LOCALES = ["zh-CN", "en"];
  const FALLBACK = "en";
  const STORE_KEY = "qchain.explorer.locale";
  const i18n = { locale: FALLBACK, catalogues: {}, formats: {} };

  function browserLocale() {
    const langs = navigator.languages && navigator.languages.length
      ? navigator.languages : [navigator.language || ""];
    return langs.some((l) => /^zh(-|$)/i.test(l)) ? "zh-CN" : FALLBACK;
  }

  function storedLocale() {
    try {
      const v = window.localStorage.getItem(STORE_KEY);
      return LOCALES.includes(v) ? v : null;
    } catch (e) {
      return null; // storage disabled: the browser's languages decide
    }
  }

  function rememberLocale(locale) {
    try { window.localStorage.setItem(STORE_KEY, locale); } catch (e) { /* not kept */ }
  }

  async function loadCatalogues() {
    await Promise.all(LOCALES.map(async (locale) => {
      const resp = await fetch(`/explorer/messages.${locale}.json`, { headers: { Accept: "application/json" } });
      i18n.catalogues[locale] = resp.ok ? await resp.json() : {};
    }));
  }

  function message(key) {
    const own = i18n.catalogues[i18n.locale] || {};
    const fallback = i18n.catalogues[FALLBACK] || {};
    return own[key] ?? fallback[key] ?? key;
  }

  // The message `key` with {name} placeholders filled from params, as text.
  function t(key, params) {
    return message(key).replace(/\{(\w+)\}/g, (m, name) => (params && name in params ? String(params[name]) : m));
  }

  // The same, as a list of children for el(): params may be DOM nodes (links, bold figures).
  function tn(key, params) {
    return message(key).split(/(\{\w+\})/).filter((part) => part !== "").map((part) => {
      const m = /^\{(\w+)\}$/.exec(part);
      return m && params && m[1] in params ? params[m[1]] : part;
    });
  }

  function formatter(kind, options, make) {
    const id = `${i18n.locale} ${kind}`;
    if (!i18n.formats[id]) i18n.formats[id] = make(i18n.locale, options);
    return i18n.formats[id];
  }

  // A count or amount in the locale's digits and grouping; `digits` fixed decimals.
  function num(n, digits) {
    const d = digits || 0;
    return formatter(`num${d}`, { minimumFractionDigits: d, maximumFractionDigits: d },
      (l, o) => new Intl.NumberFormat(l, o)).format(Number(n));
  }

  const fmtTime = (ms) => formatter("time", {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  }, (l, o) => new Intl.DateTimeFormat(l, o)).format(new Date(ms));

  function ago(ms) {
    const rel = formatter("ago", { numeric: "always", style: "short" },
      (l, o) => new Intl.RelativeTimeFormat(l, o));
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return rel.format(-s, "second");
    if (s < 3600) return rel.format(-Math.floor(s / 60), "minute");
    return rel.format(-Math.floor(s / 3600), "hour");
  }

  // A language's name in that language ("English", "简体中文"), for the switch.
  const localeName = (locale) => (i18n.catalogues[locale] || {})["locale.name"] || locale;

  // The static parts of index.html: text from data-i18n, attributes from data-i18n-*.
  function applyStatic() {
    document.documentElement.lang = i18n.locale;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const attr of ["placeholder", "title", "aria-label"]) {
      const data = `data-i18n-${attr}`;
      for (const node of document.querySelectorAll(`[${data}]`)) node.setAttribute(attr, t(node.getAttribute(data)));
    }
    const select = document.getElementById("locale");
    select.replaceChildren(...LOCALES.map((locale) => el("option", { value: locale }, localeName(locale))));
    select.value = i18n.locale;
  }

  function setLocale(locale, remember) {
    i18n.locale = LOCALES.includes(locale) ? locale : FALLBACK;
    if (remember) rememberLocale(i18n.locale);
    applyStatic();
    renderLive();
    renderChainInfo();
  }

  // --- small helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const DASH = "–";
  const short = (h, n = 10) => (h && h.length > 2 * n ? `${h.slice(0, n)}…${h.slice(-4)}` : h);
  const link = (href, text, cls) => el("a", { href, class: cls || "mono" }, text);
  const blockLink = (h) => el("a", { href: `#/block/${h}` }, `#${h}`);
  const txLink = (h) => link(`#/tx/${h}`, short(h));
  const mono = (text) => el("span", { class: "mono" }, text);

  class ApiError extends Error {
    constructor(status, doc) {
      const title = doc && doc.title;
      const detail = doc && doc.detail;
      super(title && detail && detail !== title ? t("error.problem", { title, detail })
        : title || detail || t("error.http", { status }));
      this.status = status;
    }
  }

  async function api(path, accept) {
    const resp = await fetch(path, {
      headers: { Accept: accept || "application/json", "Accept-Language": i18n.locale },
    });
    if (!resp.ok) {
      let doc = null;
      try { doc = await resp.json(); } catch (e) { doc = null; }
      throw new ApiError(resp.status, doc);
    }
    return accept === "application/msgpack" ? new Uint8Array(await resp.arrayBuffer()) : resp.json();
  }

  function json(v) { return el("pre", { class: "json" }, JSON.stringify(v, null, 2)); }

  function kv(pairs) {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
    return dl;
  }

  // --- SHA-256 with qchain's domain separation (qchain/hashing.py) -------------------

  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);

  // Plain SHA-256, for pages opened over plain HTTP from another host, where browsers
  // withhold WebCrypto (crypto.subtle exists only in secure contexts).
  function sha256Plain(data) {
    const h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    const total = ((data.length + 9 + 63) >> 6) << 6;
    const buf = new Uint8Array(total);
    buf.set(data);
    buf[data.length] = 0x80;
    const view = new DataView(buf.buffer);
    view.setUint32(total - 8, Math.floor(data.length / 0x20000000));
    view.setUint32(total - 4, (data.length * 8) >>> 0);
    const w = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < total; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      const add = [a, b, c, d, e, f, g, hh];
      for (let i = 0; i < 8; i++) h[i] = (h[i] + add[i]) >>> 0;
    }
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) ov.setUint32(4 * i, h[i]);
    return out;
  }

  async function sha256(data) {
    if (window.crypto && window.crypto.subtle) {
      return new Uint8Array(await window.crypto.subtle.digest("SHA-256", data));
    }
    return sha256Plain(data);
  }

  const DOMAIN = {
    HEADER: "qchain/header",
    MERKLE_LEAF: "qchain/merkle/leaf",
    MERKLE_NODE: "qchain/merkle/node",
  };

  // H(domain, data) = SHA-256(len(domain) || domain || data)
  async function hashDomain(domain, ...parts) {
    const tag = new TextEncoder().encode(domain);
    const len = parts.reduce((n, p) => n + p.length, 1 + tag.length);
    const buf = new Uint8Array(len);
    buf[0] = tag.length;
    buf.set(tag, 1);
    let off = 1 + tag.length;
    for (const p of parts) { buf.set(p, off); off += p.length; }
    return sha256(buf);
  }

  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

  // --- canonical msgpack, read only, keeping each value's byte span --------------------

  function decodeMsgpack(bytes) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let pos = 0;
    const take = (n) => { const s = bytes.subarray(pos, pos + n); pos += n; return s; };
    const uint = (n) => {
      let v = 0;
      for (let i = 0; i < n; i++) v = v * 256 + bytes[pos + i];
      pos += n;
      return v;
    };
    function item() {
      const start = pos;
      const b = bytes[pos++];
      let v;
      if (b === undefined) throw new Error(t("verify.msgpack_truncated"));
      if (b <= 0x7f) v = b;
      else if (b >= 0xe0) v = b - 256;
      else if ((b & 0xf0) === 0x90) v = list(b & 0x0f);
      else if ((b & 0xe0) === 0xa0) v = new TextDecoder().decode(take(b & 0x1f));
      else switch (b) {
        case 0xc0: v = null; break;
        case 0xc2: v = false; break;
        case 0xc3: v = true; break;
        case 0xc4: v = take(uint(1)); break;
        case 0xc5: v = take(uint(2)); break;
        case 0xc6: v = take(uint(4)); break;
        case 0xcc: v = uint(1); break;
        case 0xcd: v = uint(2); break;
        case 0xce: v = uint(4); break;
        case 0xcf: v = uint(8); break;
        case 0xd0: v = dv.getInt8(pos); pos += 1; break;
        case 0xd1: v = dv.getInt16(pos); pos += 2; break;
        case 0xd2: v = dv.getInt32(pos); pos += 4; break;
        case 0xd3: v = Number(dv.getBigInt64(pos)); pos += 8; break;
        case 0xd9: v = new TextDecoder().decode(take(uint(1))); break;
        case 0xda: v = new TextDecoder().decode(take(uint(2))); break;
        case 0xdb: v = new TextDecoder().decode(take(uint(4))); break;
        case 0xdc: v = list(uint(2)); break;
        case 0xdd: v = list(uint(4)); break;
        default: throw new Error(t("verify.msgpack_type", { type: `0x${b.toString(16)}` }));
      }
      return { v, raw: bytes.subarray(start, pos) };
    }
    function list(n) {
      const out = [];
      for (let i = 0; i < n; i++) out.push(item());
      return out;
    }
    const top = item();
    if (pos !== bytes.length) throw new Error(t("verify.msgpack_trailing"));
    return top;
  }

  // --- Merkle proof (qchain/merkle.py, RFC 6962 shape) ---------------------------------

  function split(n) { let k = 1; while (k * 2 < n) k *= 2; return k; }

  async function rootFromProof(leaf, index, size, path) {
    if (!(index >= 0 && index < size)) return null;
    const sides = [];
    let lo = index;
    let n = size;
    while (n > 1) {
      const k = split(n);
      if (lo < k) { sides.push(true); n = k; } else { sides.push(false); lo -= k; n -= k; }
    }
    if (sides.length !== path.length) return null;
    sides.reverse();
    let h = await hashDomain(DOMAIN.MERKLE_LEAF, leaf);
    for (let i = 0; i < path.length; i++) {
      h = sides[i]
        ? await hashDomain(DOMAIN.MERKLE_NODE, h, path[i])
        : await hashDomain(DOMAIN.MERKLE_NODE, path[i], h);
    }
    return h;
  }

  // Checks a receipt proof fetched as canonical msgpack: [receipt, proof, header, cert].
  // On a chain whose validator set changes the node serves [proof, set chain]: the set of
  // the receipt's height is proven from genesis by the set chain, which this page does
  // not check, so such a receipt never passes here (`chained`: verify it offline).
  async function verifyReceipt(bytes, validators) {
    let top = decodeMsgpack(bytes).v;
    const chained = top.length === 2;
    if (chained) top = top[0].v;
    const [receipt, proof, header, cert] = top;
    const r = receipt.v.map((x) => x.v);
    const [pIndex, pSize, pPath] = proof.v.map((x) => x.v);
    const hd = header.v.map((x) => x.v);
    const [cHeight, cBlockHash, cSigs] = cert.v.map((x) => x.v);
    const checks = [];
    const check = (ok, text) => { checks.push({ ok, text }); return ok; };
    check(r[2] === pIndex, t("verify.check_index", { index: pIndex, receipt: r[2] }));
    const root = await rootFromProof(receipt.raw, pIndex, pSize, pPath.map((x) => x.v));
    const rootParams = { hashes: num(pPath.length), leaf: pIndex, size: pSize, root: short(hex(hd[7]), 8) };
    check(
      root !== null && hex(root) === hex(hd[7]),
      root ? t("verify.check_path", rootParams) : t("verify.check_path_shape", rootParams),
    );
    const headerHash = await hashDomain(DOMAIN.HEADER, header.raw);
    check(
      hex(headerHash) === hex(cBlockHash),
      t("verify.check_header", { hash: short(hex(headerHash), 8) }),
    );
    check(r[1] === hd[1] && cHeight === hd[1], t("verify.check_height", { height: hd[1] }));
    const signers = new Set(cSigs.map((s) => s.v[0].v).filter((i) => i < validators));
    const quorum = validators - Math.floor((validators - 1) / 3);
    check(
      signers.size >= quorum,
      t("verify.check_quorum", { signers: num(signers.size), validators: num(validators), quorum: num(quorum) }),
    );
    if (chained) check(false, t("verify.check_set", { height: hd[1] }));
    return { checks, signers: signers.size, quorum, headerHash: hex(headerHash), height: hd[1], chained };
  }

  // --- live state ----------------------------------------------------------------------

  const state = {
    status: null,
    statusError: null, // the message of the last failed poll, while the node is unreachable
    live: "connecting", // the event stream: connecting, on, reconnecting
    qkd: null,
    blocks: new Map(), // height -> summary
    txs: new Map(), // tx hash -> {tx_hash, height, index, ok, code, fresh}
    samples: new Map(), // link (peer SAE id) -> [{t, level, consumed, waits, rejected}]
    home: null, // the home view's live parts, when shown
  };

  function addBlock(b, fresh) {
    state.blocks.set(b.height, { ...b, fresh });
    const heights = [...state.blocks.keys()].sort((a, c) => c - a);
    for (const h of heights.slice(KEEP_BLOCKS)) state.blocks.delete(h);
  }

  function addTx(tx, fresh) {
    state.txs.delete(tx.tx_hash);
    state.txs.set(tx.tx_hash, { ...tx, fresh });
    const keys = [...state.txs.keys()];
    for (const k of keys.slice(0, Math.max(0, keys.length - KEEP_TXS))) state.txs.delete(k);
  }

  function linkFigures(qlink) {
    const send = qlink.send || {};
    const recv = qlink.receive || {};
    const transport = qlink.transport || {};
    const rejected = transport.rejected || recv.rejected || {};
    return {
      level: Number(send.level || 0),
      recvLevel: Number(recv.level || 0),
      consumed: Number(send.keys_consumed || 0),
      waits: Number(send.waits || 0) + Number(recv.waits || 0),
      rejected: Object.values(rejected).reduce((n, x) => n + Number(x), 0),
      reasons: rejected,
    };
  }

  function sample(qkd) {
    const now = Date.now();
    for (const [sae, qlink] of Object.entries(qkd.links || {})) {
      const list = state.samples.get(sae) || [];
      list.push({ t: now, ...linkFigures(qlink) });
      if (list.length > KEEP_SAMPLES) list.shift();
      state.samples.set(sae, list);
    }
  }

  async function poll() {
    try {
      const [status, qkd] = await Promise.all([api("/v1/status"), api("/v1/qkd")]);
      state.status = status;
      state.statusError = null;
      state.qkd = qkd;
      sample(qkd);
      renderChainInfo();
      if (state.home) {
        renderValidators();
        renderLinks();
      }
    } catch (e) {
      state.statusError = e.message;
      renderChainInfo();
    }
  }

  const LIVE_TEXT = { connecting: "live.connecting", on: "live.on", reconnecting: "live.reconnecting" };

  function renderLive() {
    const live = document.getElementById("live");
    live.textContent = t(LIVE_TEXT[state.live]);
    live.className = state.live === "on" ? "live on" : "live off";
  }

  function startEvents() {
    const es = new EventSource("/v1/events");
    es.onopen = () => { state.live = "on"; renderLive(); };
    es.onerror = () => { state.live = "reconnecting"; renderLive(); };
    es.addEventListener("block", (e) => {
      addBlock(JSON.parse(e.data), true);
      if (state.home) renderBlocks();
    });
    es.addEventListener("tx", (e) => {
      const tx = JSON.parse(e.data);
      addTx(tx, true);
      if (state.home) renderTxs();
      if (current.view === "tx" && current.arg === tx.tx_hash) route();
    });
  }

  async function loadRecent() {
    const latest = await api("/v1/blocks/latest");
    const from = Math.max(1, latest.height - KEEP_BLOCKS + 1);
    const page = await api(`/v1/blocks?from=${from}&limit=${KEEP_BLOCKS}`);
    for (const b of page.blocks) {
      const h = b.header;
      if (!state.blocks.has(h.height)) {
        addBlock({ height: h.height, hash: b.hash, round: h.round, time: h.time,
          proposer: h.proposer, tx_count: b.txs.length }, false);
      }
      b.txs.forEach((tx, index) => {
        if (!state.txs.has(tx.hash)) {
          addTx({ tx_hash: tx.hash, height: h.height, index, ok: null,
            code: "", call: `${tx.contract}.${tx.method}` }, false);
        }
      });
    }
  }

  // --- chain info bar ------------------------------------------------------------------

  const orDash = (v, f) => (v === null || v === undefined ? DASH : f ? f(v) : v);

  function renderChainInfo() {
    const box = document.getElementById("chain-info");
    if (state.statusError !== null) {
      box.textContent = t("info.unreachable", { error: state.statusError });
      return;
    }
    const s = state.status;
    if (!s) return;
    box.replaceChildren(...tn("info.bar", {
      chain: el("b", {}, s.chain_id),
      node: el("b", {}, s.node),
      height: el("b", { id: "info-height" }, s.height),
      round: el("b", {}, orDash(s.round)),
      leader: el("b", {}, orDash(s.leader, (v) => `#${v}`)),
      mempool: el("b", {}, num((s.mempool && s.mempool.txs) || 0)),
    }));
  }

  // --- home ------------------------------------------------------------------------------

  const th = (key, cls) => el("th", { class: cls }, t(key));

  function viewHome(main) {
    const blocks = el("tbody");
    const txs = el("tbody");
    const validators = el("div");
    const links = el("div", { class: "links", id: "qkd-links" });
    state.home = { blocks, txs, validators, links, cards: new Map() };
    main.append(
      el("div", { class: "grid2" },
        el("section", { class: "card", id: "blocks" },
          el("h2", {}, t("home.blocks"), el("small", {}, t("home.live"))),
          el("table", {}, el("thead", {}, el("tr", {},
            th("col.height"), th("col.time"), th("col.txs", "num"), th("col.proposer", "num"),
            th("col.round", "num"), th("col.hash"))), blocks)),
        el("section", { class: "card", id: "txs" },
          el("h2", {}, t("home.txs"), el("small", {}, t("home.live"))),
          el("table", {}, el("thead", {}, el("tr", {},
            th("col.hash"), th("col.block"), th("col.index", "num"), th("col.result"))), txs))),
      el("section", { class: "card", id: "validators" },
        el("h2", {}, t("home.validators"), el("small", {}, t("home.validators_note"))), validators),
      el("section", { class: "card", id: "qkd" },
        el("h2", {}, t("home.qkd"), el("small", {}, t("home.qkd_note"))),
        el("div", { class: "legend" },
          el("i", { class: "sw-level" }), t("legend.level"),
          el("i", { class: "sw-rate" }), t("legend.rate"),
          el("i", { class: "sw-wait" }), t("legend.wait"),
          el("i", { class: "sw-reject" }), t("legend.reject")),
        links),
    );
    renderBlocks();
    renderTxs();
    renderValidators();
    renderLinks();
  }

  function renderBlocks() {
    const rows = [...state.blocks.values()].sort((a, b) => b.height - a.height).map((b) => {
      const row = el("tr", { class: b.fresh ? "fresh" : null, "data-height": b.height },
        el("td", {}, blockLink(b.height)),
        el("td", { title: fmtTime(b.time) }, ago(b.time)),
        el("td", { class: "num" }, num(b.tx_count)),
        el("td", { class: "num" }, `#${b.proposer}`),
        el("td", { class: "num" }, b.round),
        el("td", { class: "mono" }, short(b.hash)));
      b.fresh = false;
      return row;
    });
    state.home.blocks.replaceChildren(...rows);
  }

  function txResult(tx) {
    if (tx.ok === true) return el("span", { class: "pill ok" }, t("tx.ok"));
    if (tx.ok === false) return el("span", { class: "pill bad", title: tx.message }, tx.code || t("tx.failed"));
    return el("span", { class: "muted" }, tx.call || t("tx.committed"));
  }

  function renderTxs() {
    const rows = [...state.txs.values()].reverse().map((tx) => {
      const row = el("tr", { class: tx.fresh ? "fresh" : null, "data-tx": tx.tx_hash },
        el("td", {}, txLink(tx.tx_hash)), el("td", {}, blockLink(tx.height)),
        el("td", { class: "num" }, tx.index), el("td", {}, txResult(tx)));
      tx.fresh = false;
      return row;
    });
    state.home.txs.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, t("home.no_txs")))]));
  }

  function connection(s, peers, i) {
    if (i === s.index) return el("span", { class: "pill" }, t("validator.this_node"));
    if (peers.has(i)) return el("span", { class: "pill ok" }, t("validator.connected"));
    return el("span", { class: "pill bad" }, t("validator.not_connected"));
  }

  function renderValidators() {
    const s = state.status;
    if (!s || !state.home) return;
    const saeOf = new Map();
    if (state.qkd) {
      saeOf.set(s.index, state.qkd.sae_id);
      for (const [sae, qlink] of Object.entries(state.qkd.links || {})) saeOf.set(qlink.peer, sae);
    }
    const peers = new Set((s.peers || []).map(Number));
    const rows = [];
    for (let i = 0; i < (s.validators || 0); i++) {
      rows.push(el("tr", { "data-validator": i },
        el("td", {}, `#${i}`), el("td", { class: "mono" }, saeOf.get(i) || DASH),
        el("td", {}, i === s.leader ? el("span", { class: "pill leader" }, t("validator.leader")) : ""),
        el("td", {}, connection(s, peers, i))));
    }
    const alerts = Object.entries(s.alerts || {}).filter(([, v]) => v);
    state.home.validators.replaceChildren(
      el("p", { class: "muted" },
        tn("validator.deciding", {
          height: s.consensus_height ?? s.height + 1,
          round: el("b", { id: "round" }, orDash(s.round)),
          leader: el("b", { id: "leader" }, orDash(s.leader, (v) => `#${v}`)),
        }),
        s.syncing ? t("validator.syncing") : "", s.halted ? t("validator.halted", { reason: s.halted }) : ""),
      el("table", {}, el("thead", {}, el("tr", {}, th("col.validator"),
        th("col.sae"), th("col.role"), th("col.link"))), el("tbody", {}, rows)),
      alerts.length ? el("p", { class: "error" },
        t("validator.alerts", { alerts: alerts.map(([k, v]) => `${k} ${num(v)}`).join(t("list.sep")) })) : "");
  }

  function linkCard(sae, qlink) {
    const canvas = el("canvas", { height: 90, "aria-label": t("qkd.chart_label", { link: sae }) });
    const figures = el("div", { class: "link-figures" });
    const card = el("div", { class: "link", "data-link": sae },
      el("div", { class: "link-head" },
        el("b", {}, `${state.qkd.sae_id} → ${sae}`),
        el("span", { class: "muted" }, t("qkd.peer", { index: qlink.peer }))),
      figures, canvas);
    return { card, canvas, figures };
  }

  function renderLinks() {
    if (!state.qkd || !state.home) return;
    const home = state.home;
    const links = Object.entries(state.qkd.links || {}).sort(([a], [b]) => a.localeCompare(b));
    if (!links.length) {
      home.links.replaceChildren(el("p", { class: "muted" }, t("qkd.none")));
      return;
    }
    for (const [sae, qlink] of links) {
      let parts = home.cards.get(sae);
      if (!parts) {
        parts = linkCard(sae, qlink);
        home.cards.set(sae, parts);
        home.links.append(parts.card);
      }
      const hist = state.samples.get(sae) || [];
      const last = hist[hist.length - 1] || { ...linkFigures(qlink) };
      const rate = rateOf(hist);
      const reasons = Object.entries(last.reasons || {}).map(([k, v]) => `${k} ${num(v)}`).join(t("list.sep"));
      const before = hist[Math.max(0, hist.length - 11)] || last;
      parts.card.classList.toggle("starved", last.waits > before.waits);
      parts.card.classList.toggle("rejecting", last.rejected > before.rejected);
      parts.card.dataset.level = String(last.level);
      parts.figures.replaceChildren(
        el("span", {}, tn("qkd.level", { level: el("span", { class: "level" }, last.level) })),
        el("span", {}, tn("qkd.rate", { rate: el("span", { class: "rate" }, num(rate, 1)) })),
        el("span", {}, t("qkd.consumed", { n: num(last.consumed) })),
        el("span", { class: `pill ${last.waits > 0 ? "warn" : ""}`, title: t("qkd.waits_tip") },
          t("qkd.waits", { n: num(last.waits) })),
        el("span", { class: `pill ${last.rejected > 0 ? "bad" : ""}`, title: reasons || t("qkd.rejected_none") },
          t("qkd.rejected", { n: num(last.rejected) })),
      );
      drawChart(parts.canvas, hist);
    }
  }

  function rateOf(hist) {
    if (hist.length < 2) return 0;
    const a = hist[Math.max(0, hist.length - 6)];
    const b = hist[hist.length - 1];
    const dt = (b.t - a.t) / 1000;
    return dt > 0 ? Math.max(0, (b.consumed - a.consumed) / dt) : 0;
  }

  function drawChart(canvas, hist) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300;
    const h = canvas.clientHeight || 90;
    if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
    if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const top = 12;
    const bottom = h - 6;
    g.strokeStyle = "#e2e5ea";
    g.lineWidth = 1;
    g.beginPath(); g.moveTo(0, bottom + 0.5); g.lineTo(w, bottom + 0.5); g.stroke();
    if (!hist.length) return;
    const now = hist[hist.length - 1].t;
    const span = Math.min(KEEP_SAMPLES * POLL_MS, Math.max(30000, now - hist[0].t));
    const x = (t) => w - ((now - t) / span) * w;
    const rates = hist.map((s, i) => {
      if (i === 0) return 0;
      const dt = (s.t - hist[i - 1].t) / 1000;
      return dt > 0 ? Math.max(0, (s.consumed - hist[i - 1].consumed) / dt) : 0;
    });
    const maxLevel = Math.max(1, ...hist.map((s) => s.level));
    const maxRate = Math.max(1, ...rates);
    const yL = (v) => bottom - (v / maxLevel) * (bottom - top);
    const yR = (v) => bottom - (v / maxRate) * (bottom - top);
    // level: filled area
    g.beginPath();
    g.moveTo(x(hist[0].t), bottom);
    for (const s of hist) g.lineTo(x(s.t), yL(s.level));
    g.lineTo(x(now), bottom);
    g.closePath();
    g.fillStyle = "rgba(15, 118, 110, 0.18)";
    g.fill();
    g.beginPath();
    hist.forEach((s, i) => (i ? g.lineTo(x(s.t), yL(s.level)) : g.moveTo(x(s.t), yL(s.level))));
    g.strokeStyle = "#0f766e";
    g.lineWidth = 1.5;
    g.stroke();
    // consumption rate: line on its own scale
    g.beginPath();
    hist.forEach((s, i) => (i ? g.lineTo(x(s.t), yR(rates[i])) : g.moveTo(x(s.t), yR(rates[i]))));
    g.strokeStyle = "#c2410c";
    g.lineWidth = 1.2;
    g.stroke();
    // starvation and rejections: marks where the counters moved
    for (let i = 1; i < hist.length; i++) {
      if (hist[i].waits > hist[i - 1].waits) {
        g.fillStyle = "#b45309";
        g.fillRect(x(hist[i].t) - 1, top, 2, bottom - top);
      }
      if (hist[i].rejected > hist[i - 1].rejected) {
        g.fillStyle = "#b91c1c";
        g.fillRect(x(hist[i].t) - 1.5, bottom - 10, 3, 10);
      }
    }
    g.font = "10px system-ui, sans-serif";
    g.fillStyle = "#0f766e";
    g.fillText(t("qkd.chart_level", { n: num(maxLevel) }), 2, 10);
    g.fillStyle = "#c2410c";
    const label = t("qkd.chart_rate", { rate: num(maxRate, 1) });
    g.fillText(label, w - g.measureText(label).width - 2, 10);
  }

  // --- detail views ----------------------------------------------------------------------

  async function viewBlock(main, arg) {
    const b = await api(`/v1/blocks/${encodeURIComponent(arg)}`);
    const h = b.header;
    const nav = el("span", { class: "muted" },
      h.height > 1 ? link(`#/block/${h.height - 1}`, t("block.previous"), "") : "", "  ",
      link(`#/block/${h.height + 1}`, t("block.next"), ""));
    main.append(el("section", { class: "card", id: "block-detail" },
      el("h2", {}, t("block.title", { height: h.height }), nav),
      kv([
        [t("field.hash"), mono(b.hash)],
        [t("field.time"), t("time.with_ago", { time: fmtTime(h.time), ago: ago(h.time) })],
        [t("field.proposer"), t("validator.numbered", { index: h.proposer })],
        [t("field.round"), h.round],
        [t("field.parent"), h.height > 1 ? link(`#/block/${h.height - 1}`, h.parent) : mono(h.parent)],
        [t("field.tx_root"), mono(h.tx_root)],
        [t("field.receipts_root"), mono(h.receipts_root)],
        [t("field.app_hash"), mono(h.app_hash)],
        [t("field.chain"), h.chain_id],
      ])),
    el("section", { class: "card" },
      el("h2", {}, t("block.txs"), el("small", {}, num(b.txs.length))),
      b.txs.length ? el("table", {},
        el("thead", {}, el("tr", {}, th("col.index"), th("col.hash"), th("col.sender"),
          th("col.call"), th("col.nonce", "num"))),
        el("tbody", {}, b.txs.map((tx, i) => el("tr", {},
          el("td", {}, i), el("td", {}, txLink(tx.hash)), el("td", {}, link(`#/account/${tx.sender}`, short(tx.sender))),
          el("td", {}, `${tx.contract}.${tx.method}`), el("td", { class: "num" }, tx.nonce)))))
        : el("p", { class: "muted" }, t("block.empty"))));
  }

  function txStatus(d) {
    const r = d.receipt;
    if (d.status !== "committed") return el("span", { class: "pill warn" }, t("tx.pending"));
    if (r && r.ok) return el("span", { class: "pill ok" }, t("tx.committed_ok"));
    return el("span", { class: "pill bad" }, t("tx.committed_code", { code: r ? r.code : "" }));
  }

  async function viewTx(main, arg) {
    const d = await api(`/v1/txs/${encodeURIComponent(arg)}`);
    const tx = d.transaction;
    const r = d.receipt;
    main.append(el("section", { class: "card", id: "tx-detail", "data-tx": d.tx_hash },
      el("h2", {}, t("tx.title"), txStatus(d)),
      kv([
        [t("field.hash"), el("span", { class: "mono", id: "tx-hash" }, d.tx_hash)],
        [t("field.block"), d.height === null ? DASH : blockLink(d.height)],
        [t("field.index"), d.index === null ? DASH : d.index],
        ...(tx ? [
          [t("field.call"), `${tx.contract}.${tx.method}`],
          [t("field.sender"), link(`#/account/${tx.sender}`, tx.sender)],
          [t("field.nonce"), tx.nonce],
          [t("field.scheme"), tx.scheme],
          [t("field.expiry"), tx.expiry_height || t("value.none")],
        ] : []),
        [t("field.receipt"), r ? link(`#/receipt/${d.tx_hash}`, t("tx.receipt_link"), "") : t("tx.not_committed")],
      ])),
    tx ? el("section", { class: "card" }, el("h2", {}, t("tx.args")), json(tx.args)) : "",
    r ? el("section", { class: "card" }, el("h2", {}, t("tx.result")),
      r.ok ? "" : el("p", { class: "error" }, t("tx.failure", { code: r.code, message: r.message })),
      json({ result: r.result, events: r.events })) : "");
  }

  async function verifyInBrowser(arg, out) {
    try {
      const bytes = await api(`/v1/receipts/${encodeURIComponent(arg)}`, "application/msgpack");
      const validators = (state.status || (await api("/v1/status"))).validators;
      const res = await verifyReceipt(bytes, validators);
      const served = await api(`/v1/blocks/${res.height}`);
      res.checks.push({ ok: served.hash === res.headerHash, text: t("verify.check_served", { height: res.height }) });
      const pass = res.checks.every((c) => c.ok);
      out.replaceChildren(
        el("ol", { class: "checks" }, res.checks.map((c) => el("li", { class: c.ok ? "pass" : "fail" }, c.text)),
          el("li", { class: "info" }, tn("verify.offline", {
            command: mono("qchain receipt verify --genesis genesis.json"),
          }))),
        el("p", { class: `verdict ${pass ? "pass" : "fail"}`, "data-verdict": pass ? "pass" : "fail",
          "data-signers": res.signers },
          pass ? t("verify.pass", { height: res.height, signers: num(res.signers) })
            : t(res.chained ? "verify.unproven" : "verify.fail")));
    } catch (e) {
      out.replaceChildren(el("p", { class: "error" }, t("verify.error", { error: e.message })));
    }
  }

  async function viewReceipt(main, arg) {
    const d = await api(`/v1/receipts/${encodeURIComponent(arg)}`);
    const out = el("div", { id: "verify-result" });
    const button = el("button", { class: "action", id: "verify", type: "button" }, t("verify.button"));
    button.addEventListener("click", async () => {
      button.disabled = true;
      out.replaceChildren(el("p", { class: "muted" }, t("verify.checking")));
      await verifyInBrowser(arg, out);
      button.disabled = false;
    });
    const signers = new Set(d.certificate.signatures.map((s) => s.validator)).size;
    const outcome = d.receipt.ok ? t("tx.ok") : t("tx.failure", { code: d.receipt.code, message: d.receipt.message });
    main.append(el("section", { class: "card", id: "receipt-detail" },
      el("h2", {}, t("receipt.title"), el("small", {}, t("receipt.note"))),
      kv([
        [t("field.transaction"), link(`#/tx/${d.receipt.tx_hash}`, d.receipt.tx_hash)],
        [t("field.block"), blockLink(d.header.height)],
        [t("field.outcome"), outcome],
        [t("field.proof"), t("receipt.proof", {
          leaf: d.proof.index, size: d.proof.size, hashes: num(d.proof.path.length),
        })],
        [t("field.receipts_root"), mono(d.header.receipts_root)],
        [t("field.certificate"), t("receipt.certificate", {
          signers: num(signers), block: short(d.certificate.block_hash),
        })],
      ]),
      el("p", {}, button), out),
    el("section", { class: "card" }, el("h2", {}, t("receipt.document")), json(d)));
  }

  async function viewAccount(main, arg) {
    const a = await api(`/v1/accounts/${encodeURIComponent(arg)}`);
    main.append(el("section", { class: "card", id: "account-detail" },
      el("h2", {}, t("account.title"), el("small", {}, a.name || "")),
      kv([
        [t("field.address"), mono(a.address)],
        [t("field.name"), a.name], [t("field.roles"), (a.roles || []).join(t("list.sep")) || t("value.none")],
        [t("field.active"), a.active ? t("value.yes") : t("value.no")], [t("field.nonce"), a.nonce],
        [t("field.pending_nonce"), a.pending_nonce],
        [t("field.scheme"), a.scheme], [t("field.public_key"), mono(short(a.public_key, 24))],
      ])));
  }

  function anchorQuery(digest) {
    return `/v1/contracts/notary/get?digest=${encodeURIComponent(JSON.stringify({ hex: digest }))}`;
  }

  async function viewAnchor(main, arg) {
    const a = (await api(anchorQuery(arg))).result;
    const bytesOf = (v) => (v && typeof v === "object" && "hex" in v ? v.hex : String(v));
    main.append(el("section", { class: "card", id: "anchor-detail" },
      el("h2", {}, t("anchor.title"), el("small", {}, t("anchor.query"))),
      kv([
        [t("field.digest"), mono(`${a.algorithm}:${bytesOf(a.digest)}`)],
        [t("field.doc_title"), a.title], [t("field.category"), a.category],
        [t("field.anchored_by"), link(`#/account/${bytesOf(a.member)}`, bytesOf(a.member))],
        [t("field.block"), blockLink(a.height)],
        [t("field.time"), t("time.with_ago", { time: fmtTime(a.time), ago: ago(a.time) })],
        [t("field.transaction"), link(`#/tx/${bytesOf(a.tx_hash)}`, bytesOf(a.tx_hash))],
        [t("field.item"), a.item],
        [t("field.metadata"), mono(bytesOf(a.metadata) || t("value.none"))],
      ])));
  }

  // --- search and routing -----------------------------------------------------------------

  async function search(text) {
    const q = text.trim().toLowerCase().replace(/^0x/, "");
    if (/^\d{1,20}$/.test(q)) return `#/block/${Number(q)}`;
    if (/^[0-9a-f]{40}$/.test(q)) return `#/account/${q}`;
    if (/^[0-9a-f]{64}$/.test(q)) {
      try {
        await api(`/v1/txs/${q}`);
        return `#/tx/${q}`;
      } catch (e) {
        if (e.status !== 404) throw e;
      }
      try {
        await api(anchorQuery(q));
        return `#/anchor/${q}`;
      } catch (e) {
        if (e.status !== 404) throw e;
      }
      throw new Error(t("search.nothing", { hash: short(q) }));
    }
    throw new Error(t("search.help"));
  }

  const VIEWS = {
    "": viewHome, block: viewBlock, tx: viewTx, receipt: viewReceipt,
    account: viewAccount, anchor: viewAnchor,
  };
  const current = { view: "", arg: "" };

  function problemCard(titleKey, text) {
    return el("section", { class: "card" },
      el("h2", {}, t(titleKey)), el("p", { class: "error", id: "view-error" }, text),
      el("p", {}, link("#/", t("nav.back"), "")));
  }

  async function route() {
    const [, view = "", arg = ""] = (location.hash.replace(/^#/, "") || "/").split("/");
    const main = document.getElementById("view");
    const fn = VIEWS[view] || viewHome;
    current.view = view;
    current.arg = decodeURIComponent(arg);
    state.home = null;
    const fresh = el("div", { class: "contents" });
    try {
      await fn(fresh, current.arg);
    } catch (e) {
      const missing = e instanceof ApiError && e.status === 404;
      fresh.replaceChildren(problemCard("view.not_found",
        missing ? t("view.missing", { key: short(current.arg) }) : e.message));
    }
    main.replaceChildren(fresh);
    if (state.home) renderLinks();
  }

  function showSearchError(text) {
    state.home = null;
    document.getElementById("view").replaceChildren(problemCard("search.title", text));
  }

  document.getElementById("search").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("search-input");
    try {
      const target = await search(input.value);
      if (location.hash === target) route(); else location.hash = target;
    } catch (err) {
      showSearchError(err.message);
    }
  });

  document.getElementById("locale").addEventListener("change", (e) => {
    setLocale(e.target.value, true);
    route();
  });

  window.addEventListener("hashchange", route);

  setInterval(() => {
    if (state.home) {
      for (const row of state.home.blocks.querySelectorAll("tr[data-height]")) {
        const b = state.blocks.get(Number(row.dataset.height));
        if (b) row.children[1].textContent = ago(b.time);
      }
    }
  }, 5000);

  async function main() {
    await loadCatalogues().catch(() => undefined);
    setLocale(storedLocale() || browserLocale(), false);
    startEvents();
    await Promise.all([poll(), loadRecent().catch(() => undefined)]);
    await route();
    setInterval(poll, POLL_MS);
  }

  main();
})();
