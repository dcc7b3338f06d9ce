// Storyboard timeline: prompt, audio and pose tracks on the clip grid, edited by mouse and keyboard.
//
// props.value is the JSON of ui.timeline_ops.timeline_state. Edits apply locally at once (and are
// drawn), then are saved through the server function `save_tracks` one at a time: a save sends the
// whole track set with the version it was based on, so an edit from a second session is refused
// (and shown) instead of being silently overwritten. Undo/redo keep snapshots of the tracks and save
// them the same way. Python sends a new state (form edits, imports) through `value`; it is drawn and
// becomes undoable. Every draw and save is timed into window.__sviTimeline (for the perf tests).
const $ = (s) => element.querySelector(s);
const scroll = $('.tl-scroll'), canvas = $('.tl-canvas'), labels = $('.tl-labels');
const alertBox = $('.tl-alert'), statusBox = $('.tl-status');
const TRACKS = ['prompt', 'audio', 'pose'];
const NAMES = {prompt: 'Prompt', audio: 'Audio', pose: 'Pose'};
const metrics = window.__sviTimeline = window.__sviTimeline || {draws: [], saves: []};

let st = null;            // the state being edited (local, possibly ahead of the server)
let confirmed = null;     // the last state the server acknowledged
let media = {};           // previews by content hash
let sel = null;           // {track, key}
let playhead = 0;
let pxPerS = 48;
let undo = [], redo = [];
let dirty = false, saving = false, cidN = 0;
let edges = [0];
let drag = null;

// ------------------------------------------------------------------ helpers
const parse = (v) => { try { return JSON.parse(v || '{}') || {}; } catch (e) { return {}; } };
const clone = (x) => JSON.parse(JSON.stringify(x));
const keyOf = (seg) => (seg.id != null ? 'i' + seg.id : seg.cid);
const fmt = (t) => String(Math.round(t * 1000) / 1000);  // 2.125, 4.125, 0: as ui.grid.fmt_s
const segsOf = (track) => (st && st.tracks && st.tracks[track]) || [];
const find = (track, key) => segsOf(track).find((s) => keyOf(s) === key);
const step = () => (st ? (st.F - st.m) / st.fps : 2);

function edge(k) { return k <= 0 ? 0 : (st.F + (k - 1) * (st.F - st.m)) / st.fps; }
function computeEdges(until) {
  edges = [0];
  for (let k = 1; edges[edges.length - 1] < until - 1e-9 || edges.length < 2; k++) edges.push(round6(edge(k)));
}
function round6(t) { return Math.round(t * 1e6) / 1e6; }
function snap(t, free) {
  if (free) return round6(Math.max(0, Math.round(t * st.fps) / st.fps));
  let best = 0, bd = Infinity;
  for (const e of edges) { const d = Math.abs(e - t); if (d < bd) { bd = d; best = e; } }
  return best;
}
function nextEdge(t) { for (const e of edges) if (e > t + 1e-6) return e; return round6(t + step()); }
function prevEdge(t) { let p = 0; for (const e of edges) { if (e < t - 1e-6) p = e; else break; } return p; }
function totalEnd() {
  let end = st ? (st.duration || 0) : 0;
  for (const tr of TRACKS) for (const s of segsOf(tr)) end = Math.max(end, s.end);
  return end;
}
function gapAround(track, seg) {
  // The free interval [lo, hi] of `track` that `seg` (or time point seg.start..seg.end) sits in.
  let lo = 0, hi = Infinity;
  for (const o of segsOf(track)) {
    if (o === seg) continue;
    if (o.end <= seg.start + 1e-6) lo = Math.max(lo, o.end);
    else if (o.start >= seg.end - 1e-6) hi = Math.min(hi, o.start);
  }
  return [lo, hi];
}
function occupied(track, t) { return segsOf(track).some((s) => s.start <= t + 1e-6 && t < s.end - 1e-6); }
function sortTracks() { for (const tr of TRACKS) segsOf(tr).sort((a, b) => a.start - b.start); }
function say(msg) { statusBox.textContent = msg; }
function showAlert(msg) { alertBox.textContent = msg || ''; alertBox.hidden = !msg; }
function secondsAt(ev) {
  const r = canvas.getBoundingClientRect();
  return Math.max(0, (ev.clientX - r.left) / pxPerS);
}

// ------------------------------------------------------------------ drawing
function svgEl(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

function waveform(seg, w, h) {
  const m = media[seg.asset];
  const svg = svgEl('svg', {class: 'wave', width: w, height: h, 'aria-hidden': 'true'});
  if (!m || !m.peaks) return svg;
  let d = '';
  const mid = h / 2;
  for (let x = 0; x < w; x += 2) {
    const src = (seg.offset || 0) + x / pxPerS;
    const i = Math.floor(src * m.rate);
    const p = i >= 0 && i < m.peaks.length ? m.peaks[i] : 0;
    const a = Math.max(0.5, p * (mid - 2));
    d += `M${x} ${(mid - a).toFixed(1)}V${(mid + a).toFixed(1)}`;
  }
  svg.appendChild(svgEl('path', {d, class: 'wave-path'}));
  return svg;
}

function skeletons(seg, w, h) {
  const m = media[seg.asset];
  const svg = svgEl('svg', {class: 'skel', width: w, height: h, 'aria-hidden': 'true'});
  if (!m || !m.skeletons || !m.skeletons.length) return svg;
  const fh = h - 6, fw = Math.min(fh * (m.aspect || 1), 48), gapPx = fw + 8;
  const n = m.skeletons.length;
  for (let x = 2; x + fw <= w; x += gapPx) {
    const src = (seg.offset || 0) + (x / pxPerS) * (seg.speed || 1);
    let i = Math.floor(src * m.rate);
    i = ((i % n) + n) % n;  // the stream loops past its end, as the planner samples it
    const L = m.skeletons[i];
    let d = '';
    for (let j = 0; j + 3 < L.length; j += 4) {
      d += `M${(x + L[j] * fw).toFixed(1)} ${(3 + L[j + 1] * fh).toFixed(1)}L${(x + L[j + 2] * fw).toFixed(1)} ${(3 + L[j + 3] * fh).toFixed(1)}`;
    }
    svg.appendChild(svgEl('path', {d, class: 'skel-path'}));
  }
  return svg;
}

function segLabel(track, seg, i) {
  const what = track === 'prompt' ? (seg.text || '(empty prompt)') : (seg.name || track);
  return `${NAMES[track]} ${i + 1}, ${fmt(seg.start)} to ${fmt(seg.end)} seconds: ${what}`;
}

function draw() {
  const t0 = performance.now();
  canvas.replaceChildren();
  if (!st || !st.tracks) {
    const p = document.createElement('div');
    p.className = 'tl-empty';
    p.textContent = 'Open a project to edit its storyboard.';
    canvas.appendChild(p);
    canvas.style.width = '100%';
    return;
  }
  const view = (scroll.clientWidth || 800) / pxPerS;
  const horizon = Math.max(totalEnd() + 3 * step(), view, playhead + step());
  computeEdges(horizon);
  canvas.style.width = Math.ceil(horizon * pxPerS) + 'px';
  const frag = document.createDocumentFragment();

  // Ruler: clip numbers between edges, seconds ticks
  const ruler = document.createElement('div');
  ruler.className = 'tl-ruler';
  ruler.title = 'Click or drag to move the playhead';
  for (let k = 0; k + 1 < edges.length; k++) {
    const c = document.createElement('div');
    c.className = 'tl-cell' + (k < (st.clips || 0) ? ' in-plan' : '');
    c.style.left = edges[k] * pxPerS + 'px';
    c.style.width = (edges[k + 1] - edges[k]) * pxPerS + 'px';
    c.textContent = `clip ${k + 1}`;
    ruler.appendChild(c);
  }
  frag.appendChild(ruler);

  // Grid lines at clip edges
  for (const e of edges) {
    const g = document.createElement('div');
    g.className = 'tl-edge';
    g.style.left = e * pxPerS + 'px';
    frag.appendChild(g);
  }

  // Tracks and their segments
  for (const track of TRACKS) {
    const row = document.createElement('div');
    row.className = `tl-track tl-track-${track}`;
    row.dataset.track = track;
    row.setAttribute('role', 'group');
    row.setAttribute('aria-label', `${NAMES[track]} track`);
    segsOf(track).forEach((seg, i) => {
      const key = keyOf(seg);
      const d = document.createElement('div');
      const isSel = sel && sel.track === track && sel.key === key;
      d.className = `seg seg-${track}` + (isSel ? ' sel' : '') + (seg.id == null ? ' unsaved' : '');
      d.id = `seg-${track}-${key}`;
      d.dataset.track = track;
      d.dataset.key = key;
      d.setAttribute('role', 'option');
      d.setAttribute('aria-selected', isSel ? 'true' : 'false');
      d.setAttribute('aria-label', segLabel(track, seg, i));
      const w = Math.max(6, (seg.end - seg.start) * pxPerS);
      d.style.left = seg.start * pxPerS + 'px';
      d.style.width = w + 'px';
      if (track === 'audio') d.appendChild(waveform(seg, w, 44));
      if (track === 'pose') d.appendChild(skeletons(seg, w, 52));
      const lab = document.createElement('span');
      lab.className = 'seg-label';
      lab.textContent = track === 'prompt' ? (seg.text || '(empty prompt)') : (seg.name || track);
      d.appendChild(lab);
      const hl = document.createElement('div'); hl.className = 'h h-l'; hl.title = 'Drag to change the start';
      const hr = document.createElement('div'); hr.className = 'h h-r'; hr.title = 'Drag to change the end';
      d.append(hl, hr);
      row.appendChild(d);
    });
    frag.appendChild(row);
  }

  const ph = document.createElement('div');
  ph.className = 'tl-playhead';
  ph.style.left = playhead * pxPerS + 'px';
  ph.setAttribute('aria-hidden', 'true');
  frag.appendChild(ph);
  canvas.appendChild(frag);

  if (sel && find(sel.track, sel.key)) scroll.setAttribute('aria-activedescendant', `seg-${sel.track}-${sel.key}`);
  else scroll.removeAttribute('aria-activedescendant');
  metrics.draws.push(performance.now() - t0);
}

// ------------------------------------------------------------------ state from Python / the server
function mergeMedia(m) { if (m) for (const k in m) media[k] = m[k]; }

function adopt(state) {
  mergeMedia(state.media);
  st = clone(state);
  delete st.media;
  confirmed = clone(st);
  if (sel && !find(sel.track, sel.key)) sel = null;
  draw();
}

function publish() {
  // The component's value follows the editor, so Python handlers (the side form) see the current
  // version and selection.
  const v = clone(st);
  v.selected = sel ? {track: sel.track, id: (find(sel.track, sel.key) || {}).id ?? null} : null;
  props.value = JSON.stringify(v);
}

function sameTracks(a, b) {
  const strip = (t) => JSON.stringify(TRACKS.map((tr) => (t[tr] || []).map((s) => [s.id, s.start, s.end, s.text, s.negative, s.cfg, s.seed, s.asset, s.offset, s.speed])));
  return strip(a) === strip(b);
}

watch('value', () => {
  const incoming = parse(props.value);
  if (!incoming.tracks) { st = null; confirmed = null; sel = null; undo = []; redo = []; draw(); return; }
  const sameProject = st && incoming.project_id === st.project_id;
  if (sameProject && incoming.version === st.version && sameTracks(incoming.tracks, st.tracks)) {
    mergeMedia(incoming.media);
    return;  // our own value coming back
  }
  if (!sameProject) { undo = []; redo = []; sel = null; playhead = 0; showAlert(''); }
  else if (!sameTracks(incoming.tracks, st.tracks)) { undo.push(clone(st.tracks)); redo = []; }
  adopt(incoming);
  if (sameProject) say(`Updated to version ${st.version}`);
});

// ------------------------------------------------------------------ saving
function mapCids(created) {
  const fix = (tracks) => { for (const tr of TRACKS) for (const s of (tracks[tr] || [])) {
    if (s.id == null && s.cid && created[s.cid] != null) s.id = created[s.cid];
  } };
  fix(st.tracks);
  undo.forEach(fix);
  redo.forEach(fix);
  if (sel && created[sel.key] != null) sel.key = 'i' + created[sel.key];
}

async function save() {
  dirty = true;
  if (saving) return;
  saving = true;
  say('Saving…');
  while (dirty) {
    dirty = false;
    const payload = {project: st.project, version: st.version, tracks: st.tracks, known: Object.keys(media)};
    const t0 = performance.now();
    let res;
    try { res = await server.save_tracks(JSON.stringify(payload)); }
    catch (e) { res = {ok: false, error: 'Not saved: the server could not be reached. Your last change was undone.'}; }
    metrics.saves.push(performance.now() - t0);
    if (res && res.ok) {
      mapCids(res.created || {});
      mergeMedia(res.state.media);
      if (dirty) { st.version = res.state.version; confirmed = clone(res.state); delete confirmed.media; }
      else adopt(res.state);
      showAlert('');
      say(`Saved (version ${st.version})`);
      publish();
      trigger('saved', {version: st.version});
    } else {
      dirty = false;
      showAlert((res && res.error) || 'Not saved.');
      if (res && res.state) { undo = []; redo = []; adopt(res.state); say(`Reloaded version ${st.version}`); }
      else if (confirmed) { adopt(confirmed); say('Change undone'); }
      publish();
    }
  }
  saving = false;
}

function commit(label, mutate) {
  if (!st) return;
  const before = clone(st.tracks);
  if (mutate(st.tracks) === false) return;
  undo.push(before);
  if (undo.length > 200) undo.shift();
  redo = [];
  sortTracks();
  draw();
  say(label);
  save();
}

function undoRedo(from, to, label) {
  if (!st || !from.length) { say(`Nothing to ${label.toLowerCase()}`); return; }
  to.push(clone(st.tracks));
  st.tracks = from.pop();
  if (sel && !find(sel.track, sel.key)) sel = null;
  draw();
  say(label);
  save();
}

window.addEventListener('beforeunload', (ev) => { if (saving || dirty) { ev.preventDefault(); ev.returnValue = ''; } });

// ------------------------------------------------------------------ selection
function select(track, key, {focusForm = false} = {}) {
  sel = key ? {track, key} : null;
  canvas.querySelectorAll('.seg.sel').forEach((e) => { e.classList.remove('sel'); e.setAttribute('aria-selected', 'false'); });
  if (sel) {
    const e = canvas.querySelector(`#seg-${track}-${CSS.escape(key)}`);
    if (e) {
      e.classList.add('sel');
      e.setAttribute('aria-selected', 'true');
      e.scrollIntoView({block: 'nearest', inline: 'nearest'});
      scroll.setAttribute('aria-activedescendant', e.id);
    }
    const seg = find(track, key);
    say(seg ? `Selected ${segLabel(track, seg, segsOf(track).indexOf(seg))}` : '');
    publish();
    trigger('select_segment', {track, id: seg ? seg.id ?? null : null, segment: seg || null});
    if (focusForm) {
      const f = document.querySelector('#seg-text textarea, #seg-text input');
      if (f) setTimeout(() => f.focus(), 50);
    }
  } else {
    scroll.removeAttribute('aria-activedescendant');
    publish();
    trigger('select_segment', {track: null, id: null, segment: null});
  }
}

function selected() { return sel ? find(sel.track, sel.key) : null; }

// ------------------------------------------------------------------ edits
function newPromptText(t) {
  let prev = null;
  for (const s of segsOf('prompt')) if (s.start <= t) prev = s;
  return prev ? prev.text : 'a new scene';
}

function addAt(t) {
  // One clip cell: the cell containing t, or the first free one after it.
  computeEdges(Math.max(totalEnd(), t) + 4 * step());
  let k = Math.max(0, edges.findIndex((e) => e > t + 1e-6) - 1);
  while (k + 1 < edges.length && occupied('prompt', (edges[k] + edges[k + 1]) / 2)) k++;
  if (k + 1 >= edges.length) computeEdges(edges[edges.length - 1] + 4 * step());
  const start = edges[k], end = edges[k + 1];
  const seg = {cid: 'c' + (++cidN), start, end, text: newPromptText(start), negative: null, cfg: null, seed: null};
  commit(`Added prompt at ${fmt(start)}-${fmt(end)} s`, (tr) => { tr.prompt.push(seg); });
  select('prompt', seg.cid);
}

function addRange(a, b) {
  const seg = {cid: 'c' + (++cidN), start: a, end: b, text: newPromptText(a), negative: null, cfg: null, seed: null};
  commit(`Added prompt at ${fmt(a)}-${fmt(b)} s`, (tr) => { tr.prompt.push(seg); });
  select('prompt', seg.cid);
}

function deleteSel() {
  const seg = selected();
  if (!seg) { say('Select a segment first'); return; }
  const track = sel.track, list = segsOf(track), i = list.indexOf(seg);
  commit(`Deleted ${NAMES[track].toLowerCase()} ${i + 1}`, (tr) => { tr[track].splice(tr[track].indexOf(seg), 1); });
  const rest = segsOf(track);
  if (rest.length) select(track, keyOf(rest[Math.min(i, rest.length - 1)])); else select(null, null);
}

function splitSel() {
  const seg = selected();
  if (!seg) { say('Select a segment first'); return; }
  computeEdges(seg.end + step());
  let at = playhead > seg.start + 1e-6 && playhead < seg.end - 1e-6 ? snap(playhead, false) : null;
  if (at == null || at <= seg.start + 1e-6 || at >= seg.end - 1e-6) {
    const inner = edges.filter((e) => e > seg.start + 1e-6 && e < seg.end - 1e-6);
    at = inner.length ? inner[Math.floor((inner.length - 1) / 2)] : null;
  }
  if (at == null) { showAlert('This segment is one clip long: it cannot be split at a clip boundary.'); return; }
  const track = sel.track;
  const right = {...clone(seg), id: null, cid: 'c' + (++cidN), start: at};
  if (track !== 'prompt') right.offset = round6((seg.offset || 0) + (at - seg.start) * (seg.speed || 1));
  commit(`Split at ${fmt(at)} s`, () => { seg.end = at; segsOf(track).push(right); });
  select(track, keyOf(seg));
}

function edgeIndex(t) {
  let best = 0, bd = Infinity;
  edges.forEach((e, i) => { const d = Math.abs(e - t); if (d < bd) { bd = d; best = i; } });
  return best;
}

function shifted(seg, di) {
  // The segment moved by `di` clip cells, both edges on the grid (clips are not all the same length).
  const i = edgeIndex(seg.start), j = Math.max(edgeIndex(seg.end), i + 1);
  computeEdges(edges[edges.length - 1] + Math.max(0, di + 2) * step());
  if (i + di < 0) return null;
  return [edges[i + di], edges[j + di]];
}

function moveSel(dir) {
  const seg = selected();
  if (!seg) { say('Select a segment first'); return; }
  computeEdges(seg.end + 4 * step());
  const [lo, hi] = gapAround(sel.track, seg);
  const to = shifted(seg, dir);
  if (!to || to[0] < lo - 1e-6 || to[1] > hi + 1e-6) { say('Cannot move further: a neighbour is in the way'); return; }
  const oldStart = seg.start;
  commit(`Moved to ${fmt(to[0])}-${fmt(to[1])} s`, () => { seg.start = round6(to[0]); seg.end = round6(to[1]); });
  if (Math.abs(oldStart - seg.start) < 1e-9) return;
  select(sel.track, keyOf(seg));
}

function resizeSel(side, dir) {
  const seg = selected();
  if (!seg) { say('Select a segment first'); return; }
  computeEdges(seg.end + 4 * step());
  const [lo, hi] = gapAround(sel.track, seg);
  let {start, end} = seg;
  if (side === 'end') end = Math.min(dir > 0 ? nextEdge(end) : prevEdge(end), hi);
  else start = Math.max(dir > 0 ? nextEdge(start) : prevEdge(start), lo);
  if (end - start < 1 / st.fps - 1e-9) { say('A segment must keep at least one clip'); return; }
  if (start === seg.start && end === seg.end) { say('Cannot resize further'); return; }
  const oldStart = seg.start;
  commit(`Resized to ${fmt(start)}-${fmt(end)} s`, () => {
    if (sel.track !== 'prompt' && start !== oldStart) seg.offset = round6(Math.max(0, (seg.offset || 0) + (start - oldStart) * (seg.speed || 1)));
    seg.start = round6(start); seg.end = round6(end);
  });
  select(sel.track, keyOf(seg));
}

function selectNeighbour(dir) {
  const track = sel ? sel.track : 'prompt';
  const list = segsOf(track);
  if (!list.length) { say(`The ${NAMES[track].toLowerCase()} track is empty`); return; }
  const cur = selected();
  let i = cur ? list.indexOf(cur) + dir : (dir > 0 ? 0 : list.length - 1);
  i = Math.max(0, Math.min(list.length - 1, i));
  select(track, keyOf(list[i]));
}

function selectTrack(dir) {
  const cur = selected();
  const t = cur ? (cur.start + cur.end) / 2 : playhead;
  let ti = TRACKS.indexOf(sel ? sel.track : 'prompt');
  for (let n = 0; n < TRACKS.length; n++) {
    ti = (ti + dir + TRACKS.length) % TRACKS.length;
    const list = segsOf(TRACKS[ti]);
    if (list.length) {
      let best = list[0];
      for (const s of list) if (Math.abs((s.start + s.end) / 2 - t) < Math.abs((best.start + best.end) / 2 - t)) best = s;
      select(TRACKS[ti], keyOf(best));
      return;
    }
  }
  say('The other tracks are empty');
}

function setPlayhead(t) {
  playhead = Math.max(0, t);
  const ph = canvas.querySelector('.tl-playhead');
  if (ph) ph.style.left = playhead * pxPerS + 'px';
  say(`Playhead at ${fmt(playhead)} s`);
}

function zoom(f) {
  const mid = (scroll.scrollLeft + scroll.clientWidth / 2) / pxPerS;
  pxPerS = Math.min(400, Math.max(4, pxPerS * f));
  draw();
  scroll.scrollLeft = mid * pxPerS - scroll.clientWidth / 2;
  say(`Zoom: ${Math.round(pxPerS)} px per second`);
}

function fit() {
  if (!st) return;
  pxPerS = Math.min(400, Math.max(4, (scroll.clientWidth - 30) / Math.max(totalEnd() + step(), step())));
  draw();
}

// ------------------------------------------------------------------ mouse
canvas.addEventListener('pointerdown', (ev) => {
  if (ev.button !== 0 || !st) return;
  scroll.focus({preventScroll: true});
  const t = secondsAt(ev);
  if (ev.target.closest('.tl-ruler')) {
    setPlayhead(snap(t, ev.altKey));
    drag = {mode: 'scrub'};
  } else {
    const trackEl = ev.target.closest('.tl-track');
    if (!trackEl) return;
    const track = trackEl.dataset.track;
    const segEl = ev.target.closest('.seg');
    if (segEl) {
      const key = segEl.dataset.key, seg = find(track, key);
      if (!seg) return;
      if (!(sel && sel.track === track && sel.key === key)) select(track, key);
      const mode = ev.target.classList.contains('h-l') ? 'left' : ev.target.classList.contains('h-r') ? 'right' : 'move';
      drag = {mode, track, key, seg, t0: t, start: seg.start, end: seg.end, gap: gapAround(track, seg), el: segEl, moved: false};
    } else {
      drag = {mode: 'create', track, t0: t, moved: false, el: null};
    }
  }
  canvas.setPointerCapture(ev.pointerId);
  ev.preventDefault();
});

canvas.addEventListener('pointermove', (ev) => {
  if (!drag) return;
  const t = secondsAt(ev), free = ev.altKey;
  if (drag.mode === 'scrub') { setPlayhead(snap(t, free)); return; }
  if (Math.abs(t - drag.t0) * pxPerS < 4 && !drag.moved) return;
  drag.moved = true;
  computeEdges(Math.max(totalEnd(), t) + 4 * step());
  const [lo, hi] = drag.gap || [0, Infinity];
  const minLen = free ? 1 / st.fps : 1e-3;
  let a = drag.start, b = drag.end;
  if (drag.mode === 'move') {
    const len = drag.end - drag.start;
    if (free) {
      a = snap(drag.start + (t - drag.t0), true);
      a = Math.min(Math.max(a, lo), hi - len);
      b = a + len;
    } else {
      // whole clip cells: both edges stay on the grid
      let di = edgeIndex(drag.start + (t - drag.t0)) - edgeIndex(drag.start);
      let to = shifted(drag, di);
      while (di !== 0 && (!to || to[0] < lo - 1e-6 || to[1] > hi + 1e-6)) { di -= Math.sign(di); to = shifted(drag, di); }
      [a, b] = to || [drag.start, drag.end];
    }
  } else if (drag.mode === 'left') {
    a = Math.min(Math.max(snap(t, free), lo), drag.end - minLen);
    if (!free && a >= drag.end - 1e-6) a = prevEdge(drag.end);
  } else if (drag.mode === 'right') {
    b = Math.max(Math.min(snap(t, free), hi), drag.start + minLen);
    if (!free && b <= drag.start + 1e-6) b = nextEdge(drag.start);
  } else if (drag.mode === 'create') {
    if (drag.track !== 'prompt' || occupied('prompt', drag.t0)) { drag.moved = false; return; }
    const [glo, ghi] = gapAround('prompt', {start: drag.t0, end: drag.t0});
    a = Math.max(snap(Math.min(drag.t0, t), free), glo);
    b = Math.min(snap(Math.max(drag.t0, t), free), ghi);
    if (b - a < 1e-6) { a = prevEdge(drag.t0 + 1e-6); b = nextEdge(drag.t0); a = Math.max(a, glo); b = Math.min(b, ghi); }
    if (!drag.el) {
      drag.el = document.createElement('div');
      drag.el.className = 'seg seg-prompt ghost';
      canvas.querySelector('.tl-track-prompt').appendChild(drag.el);
    }
  }
  drag.a = round6(a); drag.b = round6(b);
  if (drag.el) { drag.el.style.left = a * pxPerS + 'px'; drag.el.style.width = Math.max(4, (b - a) * pxPerS) + 'px'; }
  say(`${fmt(a)}-${fmt(b)} s`);
});

function endDrag(ev) {
  if (!drag) return;
  const d = drag;
  drag = null;
  try { canvas.releasePointerCapture(ev.pointerId); } catch (e) { /* already released */ }
  if (d.mode === 'scrub') return;
  if (d.mode === 'create') {
    if (d.el) d.el.remove();
    if (d.moved && d.b > d.a) addRange(d.a, d.b);
    else if (!d.moved) { select(null, null); setPlayhead(snap(d.t0, true)); }
    return;
  }
  if (!d.moved || (d.a === d.start && d.b === d.end)) return;
  const seg = d.seg;
  commit(`${d.mode === 'move' ? 'Moved' : 'Resized'} to ${fmt(d.a)}-${fmt(d.b)} s`, () => {
    if (d.track !== 'prompt' && d.mode !== 'right' && d.a !== d.start) {
      seg.offset = round6(Math.max(0, (seg.offset || 0) + (d.mode === 'left' ? (d.a - d.start) * (seg.speed || 1) : 0)));
    }
    seg.start = d.a; seg.end = d.b;
  });
  select(d.track, keyOf(seg));
}
canvas.addEventListener('pointerup', endDrag);
canvas.addEventListener('pointercancel', endDrag);

function trackAtY(y) {
  // Pointer capture retargets click events to the canvas: find the track by position instead.
  for (const el of canvas.querySelectorAll('.tl-track')) {
    const r = el.getBoundingClientRect();
    if (y >= r.top && y < r.bottom) return el.dataset.track;
  }
  return null;
}

canvas.addEventListener('dblclick', (ev) => {
  if (!st || trackAtY(ev.clientY) !== 'prompt') return;
  const t = secondsAt(ev);
  const seg = segsOf('prompt').find((s) => s.start <= t && t < s.end);
  if (seg) { select('prompt', keyOf(seg), {focusForm: true}); return; }
  addAt(t);
});

scroll.addEventListener('wheel', (ev) => {
  if (ev.ctrlKey) { ev.preventDefault(); zoom(ev.deltaY < 0 ? 1.25 : 0.8); }
}, {passive: false});

// ------------------------------------------------------------------ keyboard
scroll.addEventListener('keydown', (ev) => {
  if (!st) return;
  const k = ev.key, ctrl = ev.ctrlKey || ev.metaKey;
  let handled = true;
  if (ctrl && (k === 'z' || k === 'Z')) { ev.shiftKey ? undoRedo(redo, undo, 'Redo') : undoRedo(undo, redo, 'Undo'); }
  else if (ctrl && (k === 'y' || k === 'Y')) undoRedo(redo, undo, 'Redo');
  else if (k === 'ArrowLeft' || k === 'ArrowRight') {
    const dir = k === 'ArrowRight' ? 1 : -1;
    if (ev.altKey) resizeSel(ev.shiftKey ? 'start' : 'end', dir);
    else if (ev.shiftKey) moveSel(dir);
    else selectNeighbour(dir);
  }
  else if (k === 'ArrowUp') selectTrack(-1);
  else if (k === 'ArrowDown') selectTrack(1);
  else if (k === 'Delete' || k === 'Backspace') deleteSel();
  else if (k === 'n' || k === 'N' || k === 'Insert') { const s = selected(); addAt(s ? s.end : playhead); }
  else if (k === 's' || k === 'S') splitSel();
  else if (k === 'Enter') { if (sel) select(sel.track, sel.key, {focusForm: true}); else selectNeighbour(1); }
  else if (k === 'Escape') select(null, null);
  else if (k === 'Home') { setPlayhead(0); scroll.scrollLeft = 0; }
  else if (k === 'End') { setPlayhead(totalEnd()); }
  else if (k === '+' || k === '=') zoom(1.25);
  else if (k === '-') zoom(0.8);
  else handled = false;
  if (handled) { ev.preventDefault(); ev.stopPropagation(); }
});

// ------------------------------------------------------------------ toolbar
const actions = {
  add: () => { const s = selected(); addAt(s ? s.end : playhead); },
  split: splitSel, delete: deleteSel,
  undo: () => undoRedo(undo, redo, 'Undo'), redo: () => undoRedo(redo, undo, 'Redo'),
  zoomin: () => zoom(1.25), zoomout: () => zoom(0.8), fit,
};
element.querySelectorAll('[data-act]').forEach((b) => b.addEventListener('click', () => {
  actions[b.dataset.act]();
  if (b.dataset.act !== 'delete') scroll.focus({preventScroll: true});
}));

// ------------------------------------------------------------------ start
const first = parse(props.value);
if (first.tracks) adopt(first); else draw();
showAlert('');
