// Clip cards. props.value: {cards: [{index, start_s, end_s, prompt, seed, status, take_id, takes, thumb}],
// selected: index|null, rendering: index|null}.
const root = element.querySelector('.cstrip');

function draw() {
  let v = {};
  try { v = JSON.parse(props.value || '{}') || {}; } catch (e) { v = {}; }
  const cards = v.cards || [];
  root.replaceChildren();
  if (!cards.length) {
    const p = document.createElement('div');
    p.className = 'cempty';
    p.textContent = 'No clips yet: open a project and render it.';
    root.appendChild(p);
    return;
  }
  for (const c of cards) {
    const item = document.createElement('div');
    item.setAttribute('role', 'listitem');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'ccard' + (v.selected === c.index ? ' sel' : '');
    b.dataset.index = c.index;
    const status = v.rendering === c.index ? 'rendering' : c.status;
    b.setAttribute('aria-label', `Clip ${c.index + 1}, ${Math.round(c.start_s * 1000) / 1000} to ${Math.round(c.end_s * 1000) / 1000} seconds, ` +
      `${status}, ${c.takes} take${c.takes === 1 ? '' : 's'}`);
    b.setAttribute('aria-pressed', v.selected === c.index ? 'true' : 'false');
    let img;
    if (c.thumb) { img = document.createElement('img'); img.src = c.thumb; img.alt = ''; }
    else { img = document.createElement('div'); img.className = 'noimg'; }
    const title = document.createElement('div');
    title.className = 'ctitle';
    title.textContent = `Clip ${c.index + 1} · ${c.start_s.toFixed(1)}–${c.end_s.toFixed(1)} s`;
    const badge = document.createElement('span');
    badge.className = 'badge ' + status;
    badge.textContent = status;
    const takes = document.createElement('span');
    takes.textContent = ` ${c.takes} take${c.takes === 1 ? '' : 's'}`;
    const meta = document.createElement('div');
    meta.append(badge, takes);
    const pr = document.createElement('div');
    pr.className = 'cprompt';
    pr.textContent = c.prompt;
    pr.title = c.prompt;
    b.append(img, title, meta, pr);
    b.addEventListener('click', () => trigger('pick_clip', {index: c.index}));
    item.appendChild(b);
    root.appendChild(item);
  }
}

draw();
watch('value', draw);
