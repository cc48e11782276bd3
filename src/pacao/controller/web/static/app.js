// pacao web view: no framework, no network access beyond this controller.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const S = {
    token: sessionStorage.getItem("pacao-token") || "",
    snap: null, selected: null, abort: null, dirty: false, detailAt: 0,
    frame: 0, playing: false, stats: { updates: 0, applyMs: 0, renders: 0, drawMs: 0, mapMs: 0 },
  };
  const SLA_TXT = { "0": "met", "1": "violated", "-1": "unknown" };
  const SLA_CLS = { "0": "sla-ok", "1": "sla-bad", "-1": "sla-unk" };
  const SLA_COL = { "0": "#2e9d48", "1": "#d32f2f", "-1": "#9aa" };
  const ROW_LIMIT = 200, LINE_LIMIT = 300;

  function headers() { return { Authorization: "Bearer " + S.token }; }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function fmtTime(t) {
    if (t === null || t === undefined) return "-";
    const d = new Date(t * 1000);
    if (S.snap && S.snap.mode === "replay") { // simulated time: day and time of day
      return `day ${Math.floor(t / 86400)} ${d.toISOString().slice(11, 19)}`;
    }
    return d.toISOString().replace("T", " ").slice(0, 19);
  }

  // -- login -------------------------------------------------------------------
  async function login(token) {
    S.token = token;
    const r = await fetch("/ui/api/snapshot", { headers: headers() });
    if (r.status === 401) { $("login-error").textContent = "wrong token"; S.token = ""; return false; }
    if (!r.ok) { $("login-error").textContent = "error " + r.status; return false; }
    sessionStorage.setItem("pacao-token", token);
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    applySnapshot(await r.json());
    if (S.snap.mode === "replay") startReplay(); else stream();
    return true;
  }
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value); });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem("pacao-token"); S.token = ""; if (S.abort) S.abort.abort(); location.reload();
  });

  // -- live stream (server-sent events over fetch, to carry the token) -------------------
  async function stream() {
    const ctl = new AbortController(); S.abort = ctl;
    try {
      const r = await fetch("/ui/api/events", { headers: headers(), signal: ctl.signal });
      if (r.status === 401) { location.reload(); return; }
      setConn(true);
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let k;
        while ((k = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, k); buf = buf.slice(k + 2);
          let ev = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) ev = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          const msg = JSON.parse(data);
          if (ev === "snapshot") applySnapshot(msg); else if (ev === "update") applyUpdate(msg);
        }
      }
    } catch (e) { if (ctl.signal.aborted) return; }
    setConn(false);
    setTimeout(stream, 1000);
  }
  function setConn(on) {
    $("conn").className = "conn " + (on ? "on" : "off");
    $("conn").textContent = on ? (S.snap && S.snap.mode === "replay" ? "replay" : "live") : "not connected";
  }

  // -- state ---------------------------------------------------------------------
  function applySnapshot(s) {
    const t0 = performance.now();
    S.snap = s;
    $("mode").textContent = s.title || s.mode;
    S.proj = projection(s.box);
    S.bg = null; // the geography layer, drawn once per snapshot
    S.byName = s.names.map((_, i) => i).sort((a, b) => (s.names[a] < s.names[b] ? -1 : 1));
    schedule();
    S.stats.applyMs += performance.now() - t0;
  }
  function applyUpdate(u) {
    const t0 = performance.now();
    const s = S.snap;
    if (u.users) {
      const idx = u.users.idx;
      for (const k of Object.keys(u.users)) {
        if (k === "idx") continue;
        const col = s.users[k], vals = u.users[k];
        for (let j = 0; j < idx.length; j++) col[idx[j]] = vals[j];
      }
    }
    for (const k of Object.keys(u)) if (k !== "users") s[k] = u[k];
    S.stats.updates++;
    S.stats.applyMs += performance.now() - t0;
    schedule();
  }
  function schedule() {
    if (S.dirty) return;
    S.dirty = true;
    requestAnimationFrame(() => { S.dirty = false; render(); });
  }

  // -- rendering -------------------------------------------------------------------
  function projection(b) {
    const [lat0, lat1, lon0, lon1] = b;
    const k = Math.cos(((lat0 + lat1) / 2) * Math.PI / 180);
    const w = (lon1 - lon0) * k, h = lat1 - lat0;
    const cv = $("map"), m = 20;
    const sc = Math.min((cv.width - 2 * m) / w, (cv.height - 2 * m) / h);
    const ox = (cv.width - w * sc) / 2, oy = (cv.height - h * sc) / 2;
    return (lat, lon) => [ox + (lon - lon0) * k * sc, oy + (lat1 - lat) * sc];
  }
  function userXY(s, P) {
    const n = s.names.length, xs = new Float32Array(n), ys = new Float32Array(n);
    const u = s.users, dcxy = s.dcs.map((d) => P(d.lat, d.lon));
    if (u.lat) {
      for (let i = 0; i < n; i++) { const p = P(u.lat[i], u.lon[i]); xs[i] = p[0]; ys[i] = p[1]; }
    } else { // no user positions in a controller config: a spiral around the entry DC
      const rank = new Int32Array(s.dcs.length + 1);
      for (let i = 0; i < n; i++) {
        const e = u.entry[i], r = rank[e + 1]++, c = e >= 0 ? dcxy[e] : [20, 20];
        const a = r * 2.39996, d = 14 + 2.2 * Math.sqrt(r);
        xs[i] = c[0] + d * Math.cos(a); ys[i] = c[1] + d * Math.sin(a);
      }
    }
    return [xs, ys, dcxy];
  }
  function render() {
    const s = S.snap; if (!s) return;
    const t0 = performance.now();
    drawMap(s);
    S.stats.mapMs += performance.now() - t0;
    renderUsers(s); renderDcs(s); renderPlans(s);
    $("clock").textContent = (s.mode === "replay" ? "sim " : "") + fmtTime(s.now);
    S.stats.drawMs += performance.now() - t0;
    S.stats.renders++;
    if (S.selected && performance.now() - S.detailAt > 1000) loadDetail(S.selected);
  }
  function drawMap(s) {
    const cv = $("map"), g = cv.getContext("2d"), P = S.proj;
    if (!S.bg) {
      S.bg = document.createElement("canvas"); S.bg.width = cv.width; S.bg.height = cv.height;
      const b = S.bg.getContext("2d"); b.fillStyle = "#c9cfd8";
      for (const [la, lo] of s.geo) { const p = P(la, lo); b.fillRect(p[0], p[1], 1.5, 1.5); }
    }
    g.clearRect(0, 0, cv.width, cv.height);
    g.drawImage(S.bg, 0, 0);
    const [xs, ys, dcxy] = userXY(s, P), u = s.users, n = s.names.length;
    // Lines for a sample of users (all when few) and the selected one.
    const step = Math.max(1, Math.ceil(n / LINE_LIMIT)), sel = s.names.indexOf(S.selected);
    g.lineWidth = 1;
    for (let i = 0; i < n; i += step) drawLinks(g, i, xs, ys, dcxy, u, 0.35);
    if (sel >= 0) { g.lineWidth = 2.5; drawLinks(g, sel, xs, ys, dcxy, u, 1); }
    const sz = n > 2000 ? 2 : 5;
    for (const code of ["-1", "0", "1"]) { // violated users drawn last (on top)
      g.fillStyle = SLA_COL[code]; const c = Number(code);
      for (let i = 0; i < n; i++) if (u.sla[i] === c) g.fillRect(xs[i] - sz / 2, ys[i] - sz / 2, sz, sz);
    }
    if (sel >= 0) { g.strokeStyle = "#000"; g.lineWidth = 2; g.strokeRect(xs[sel] - 5, ys[sel] - 5, 10, 10); }
    g.font = "12px system-ui, sans-serif";
    s.dcs.forEach((d, j) => {
      const [x, y] = dcxy[j];
      g.fillStyle = "#1d2330"; g.fillRect(x - 6, y - 6, 12, 12);
      g.fillStyle = "#fff"; g.fillRect(x - 3, y - 3, 6, 6);
      if (s.dcs.length <= 40) { g.fillStyle = "#1d2330"; g.fillText(d.name, x + 8, y - 6); }
    });
    $("drawn").textContent = `${n} users drawn; links for ${Math.ceil(n / step)}`;
  }
  function drawLinks(g, i, xs, ys, dcxy, u, alpha) {
    const e = u.entry[i], h = u.host[i];
    g.globalAlpha = alpha;
    if (e >= 0) { g.strokeStyle = "#1e63c7"; g.setLineDash([]); g.beginPath(); g.moveTo(xs[i], ys[i]); g.lineTo(dcxy[e][0], dcxy[e][1]); g.stroke(); }
    if (h >= 0) {
      const a = e >= 0 ? dcxy[e] : [xs[i], ys[i]];
      if (h !== e) { g.strokeStyle = "#e08a00"; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(a[0], a[1]); g.lineTo(dcxy[h][0], dcxy[h][1]); g.stroke(); }
    }
    g.setLineDash([]); g.globalAlpha = 1;
  }
  function renderUsers(s) {
    const f = $("filter").value.trim().toLowerCase(), u = s.users, n = s.names.length;
    // Violated users first, each group by name (S.byName is sorted once per snapshot).
    const bad = [], rest = [];
    for (const i of S.byName) {
      if (f && !s.names[i].toLowerCase().includes(f)) continue;
      (u.sla[i] === 1 ? bad : rest).push(i);
    }
    const idx = bad.concat(rest);
    const dc = (j) => (j >= 0 ? s.dcs[j].name : "-");
    const rows = idx.slice(0, ROW_LIMIT).map((i) => {
      const nm = esc(s.names[i]), c = String(u.sla[i]);
      return `<tr data-user="${nm}"${s.names[i] === S.selected ? ' class="selected"' : ""}><td>${nm}</td>` +
        `<td class="entry">${esc(dc(u.entry[i]))}</td><td class="host">${esc(dc(u.host[i]))}</td>` +
        `<td class="sla ${SLA_CLS[c]}">${SLA_TXT[c]}</td></tr>`;
    });
    $("users").tBodies[0].innerHTML = rows.join("");
    let nbad = 0; for (let i = 0; i < n; i++) if (u.sla[i] === 1) nbad++;
    $("user-count").textContent = `(${n}, ${nbad} violated)`;
    $("users-more").textContent = idx.length > ROW_LIMIT ? `${idx.length - ROW_LIMIT} more: filter to see them (violated first)` : "";
  }
  function renderDcs(s) {
    const m = s.dcs.length, e = new Int32Array(m), h = new Int32Array(m), bad = new Int32Array(m), u = s.users;
    for (let i = 0; i < s.names.length; i++) {
      if (u.entry[i] >= 0) { e[u.entry[i]]++; if (u.sla[i] === 1) bad[u.entry[i]]++; }
      if (u.host[i] >= 0) h[u.host[i]]++;
    }
    $("dc-table").tBodies[0].innerHTML = s.dcs.map((d, j) =>
      `<tr data-dc="${esc(d.name)}"><td>${esc(d.name)}</td><td class="n-entry">${e[j]}</td><td class="n-host">${h[j]}</td><td>${bad[j]}</td></tr>`).join("");
  }
  const GROUPS = { pending: ["recommended", "approved"], running: ["ongoing"], done: ["succeeded"], failed: ["failed"] };
  function renderPlans(s) {
    const plans = s.plans || [];
    // Rebuild only when the plans changed: buttons must not be replaced under the pointer.
    const key = JSON.stringify([plans, s.reverts, s.counts, s.manual]);
    if (key === S.plansKey) return;
    S.plansKey = key;
    for (const [g, states] of Object.entries(GROUPS)) {
      $("plans-" + g).innerHTML = plans.filter((p) => states.includes(p.state)).map((p) => {
        const acts = p.actions.map((a) => `<div class="act ${esc(a.state)}">${esc(a.kind)} ${esc(a.what)}: <b>${esc(a.state)}</b>${a.error ? " (" + esc(a.error) + ")" : ""}</div>`).join("");
        const btn = s.manual && p.state === "recommended"
          ? ` <button class="approve" data-plan="${esc(p.id)}">approve</button> <button class="reject" data-plan="${esc(p.id)}">reject</button>` : "";
        return `<li data-plan="${esc(p.id)}" data-state="${esc(p.state)}" data-kind="${esc(p.kind)}" data-user="${esc(p.user)}">` +
          `<b>${esc(p.kind)}</b> ${esc(p.user)} <i>${esc(p.state)}</i> ${fmtTime(p.updated)}${btn}<div class="muted">${esc(p.reason)}</div>${acts}</li>`;
      }).join("");
    }
    $("reverts").innerHTML = (s.reverts || []).map((r) => `<li data-state="reverted">${fmtTime(r.at)} ${esc(r.kind)} ${esc(r.what)} (plan ${esc(r.plan.slice(0, 8))})</li>`).join("");
    const c = s.counts || {};
    $("plan-counts").textContent = Object.keys(c).filter((k) => c[k]).map((k) => `${k} ${c[k]}`).join(", ");
  }
  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button.approve, button.reject");
    if (b) {
      const verb = b.classList.contains("approve") ? "approve" : "reject";
      b.disabled = true;
      const r = await fetch(`/plans/${encodeURIComponent(b.dataset.plan)}/${verb}`, { method: "POST", headers: headers() });
      if (!r.ok) { b.disabled = false; alert(`${verb}: ${r.status} ${(await r.json()).detail || ""}`); }
      return;
    }
    const tr = e.target.closest("#users tbody tr");
    if (tr) { S.selected = tr.dataset.user; loadDetail(S.selected); schedule(); }
  });
  $("filter").addEventListener("input", schedule);
  $("map").addEventListener("click", (e) => {
    const s = S.snap; if (!s) return;
    const cv = $("map"), rc = cv.getBoundingClientRect();
    const x = (e.clientX - rc.left) * cv.width / rc.width, y = (e.clientY - rc.top) * cv.height / rc.height;
    const [xs, ys] = userXY(s, S.proj);
    let best = -1, bd = 100;
    for (let i = 0; i < xs.length; i++) { const d = (xs[i] - x) ** 2 + (ys[i] - y) ** 2; if (d < bd) { bd = d; best = i; } }
    if (best >= 0) { S.selected = s.names[best]; loadDetail(S.selected); schedule(); }
  });

  // -- user detail -------------------------------------------------------------------
  async function loadDetail(name) {
    S.detailAt = performance.now();
    const q = S.snap.mode === "replay" ? `?frame=${S.frame}` : "";
    const r = await fetch(`/ui/api/users/${encodeURIComponent(name)}${q}`, { headers: headers() });
    if (!r.ok) return;
    const d = await r.json();
    if (d.name !== S.selected) return;
    $("detail").hidden = false; $("detail-name").textContent = d.name;
    const t = d.timers || {}, st = d.state || {};
    const kv = [
      ["VM", `${esc(d.vm)} at ${esc(st.host || "-")}`],
      ["entry", `${esc(st.entry || "-")} (${esc(d.entry_dc || "-")})`],
      ["SLA", d.sla_met === null || d.sla_met === undefined ? "unknown" : d.sla_met ? "met" : "violated"],
      ["SLA bounds", Object.entries(d.sla || {}).map(([k, v]) => `${k} ≤ ${v.max} (w ${v.weight})`).join(", ")],
      ["LISP priorities", S.snap.mode === "replay" ? "n/a (simulation)" : d.priorities ? Object.entries(d.priorities).sort((a, b) => a[1] - b[1]).map(([r, p]) => `${esc(r)}=${p}`).join(" ") + (d.priorities_set_at ? ` (set ${fmtTime(d.priorities_set_at)})` : "") : "as registered (not changed by pacao)"],
      ["S' / S'' / S'''", d.timers_text ? esc(d.timers_text) : `${t.s1} s / ${t.s2} s / ${t.s3} s`],
      ["next S' window", d.last_window_end ? `closes in ${Math.max(0, d.last_window_end + t.s1 - d.now).toFixed(1)} s` : "-"],
      ["S'' (Step 2)", d.step2_due ? `due in ${Math.max(0, d.step2_due - d.now).toFixed(1)} s` : "not due"],
    ];
    $("detail-body").innerHTML = `<div class="kv">${kv.map(([k, v]) => `<span>${k}</span><span class="v-${k.replace(/\W/g, "")}">${v}</span>`).join("")}</div>` + chart(d);
  }
  const COLORS = ["#1e63c7", "#d32f2f", "#2e9d48", "#8e24aa", "#e08a00", "#00838f"];
  function chart(d) {
    const series = Object.entries(d.windows || {});
    if (!series.length) return '<p class="muted">no window measured yet</p>';
    let t0 = Infinity, t1 = -Infinity, v1 = 1;
    for (const [, pts] of series) for (const p of pts) { t0 = Math.min(t0, p.ts); t1 = Math.max(t1, p.ts); if (p.rtt_ms !== null) v1 = Math.max(v1, p.rtt_ms); }
    const W = 400, H = 110, X = (t) => 30 + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - 40), Y = (v) => H - 12 - v / v1 * (H - 22);
    const lines = series.map(([rloc, pts], j) => {
      const p = pts.filter((q) => q.rtt_ms !== null).map((q) => `${X(q.ts).toFixed(1)},${Y(q.rtt_ms).toFixed(1)}`).join(" ");
      return `<polyline fill="none" stroke="${COLORS[j % COLORS.length]}" stroke-width="1.5" points="${p}"/>`;
    }).join("");
    const bound = d.sla && d.sla.rtt ? `<line x1="30" x2="${W - 10}" y1="${Y(d.sla.rtt.max)}" y2="${Y(d.sla.rtt.max)}" stroke="#999" stroke-dasharray="3 3"/>` : "";
    const leg = series.map(([rloc, pts], j) => {
      const last = pts[pts.length - 1];
      const dc = d.rloc_dc ? d.rloc_dc[rloc] : "";
      return `<tr data-rloc="${esc(rloc)}"><td style="color:${COLORS[j % COLORS.length]}">■ ${esc(rloc)} ${esc(dc || "")}</td><td>${last.rtt_ms === null ? "lost" : last.rtt_ms.toFixed(1) + " ms"}</td><td>${last.jitter_ms === null ? "-" : last.jitter_ms.toFixed(1) + " ms"}</td><td>${(100 * last.availability).toFixed(0)} %</td></tr>`;
    }).join("");
    return `<svg class="chart" viewBox="0 0 ${W} ${H}"><text x="2" y="10" font-size="9">${v1.toFixed(0)} ms</text><text x="2" y="${H - 3}" font-size="9">0</text>${bound}${lines}</svg>` +
      `<table class="rloc-table"><thead><tr><th>RLOC (last ${series[0][1].length} windows)</th><th>RTT</th><th>jitter</th><th>avail.</th></tr></thead><tbody>${leg}</tbody></table>`;
  }

  // -- replay of a simulator run ------------------------------------------------------
  async function startReplay() {
    $("player").hidden = false; setConn(true);
    $("seek").max = String(S.snap.frames - 1);
    $("seek").addEventListener("input", () => loadFrame(Number($("seek").value)));
    $("play").addEventListener("click", () => { S.playing = !S.playing; $("play").textContent = S.playing ? "pause" : "play"; if (S.playing) playLoop(); });
    S.frame = 0; $("frame-time").textContent = `frame 1/${S.snap.frames}`;
  }
  let loading = Promise.resolve();
  function loadFrame(k) { loading = loading.then(() => fetchFrame(k)); return loading; }
  async function fetchFrame(k) {
    if (k === S.frame) return;
    const r = await fetch(`/ui/api/replay/frames/${k}?since=${S.frame}`, { headers: headers() });
    if (!r.ok) return;
    applyUpdate(await r.json());
    S.frame = k; $("seek").value = String(k);
    $("frame-time").textContent = `frame ${k + 1}/${S.snap.frames}`;
    if (S.selected) loadDetail(S.selected);
  }
  async function playLoop() {
    while (S.playing && S.frame < S.snap.frames - 1) {
      await loadFrame(S.frame + 1);
      await new Promise((res) => setTimeout(res, 1000 / Number($("speed").value)));
    }
    S.playing = false; $("play").textContent = "play";
  }

  setInterval(() => { if (S.selected && S.snap && S.snap.mode !== "replay") loadDetail(S.selected); }, 1500);
  window.pacao = { applySnapshot, applyUpdate, render, stats: S.stats };
  if (S.token) login(S.token).then((ok) => { if (!ok) sessionStorage.removeItem("pacao-token"); });
})();
