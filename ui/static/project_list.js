// Project cards. props.value: JSON list of {name, version, updated_at, duration_s, clips, model, thumb}.
const root = element.querySelector('.plist');
let selected = null;

function ago(iso) {
  const t = Date.parse(iso);
  if (isNaN(t)) return '';
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return 'edited just now';
  if (s < 3600) return `edited ${Math.round(s / 60)} min ago`;
  if (s < 86400) return `edited ${Math.round(s / 3600)} h ago`;
  return 'edited ' + new Date(t).toLocaleDateString();
}

function draw() {
  let rows = [];
  try { rows = JSON.parse(props.value || '[]') || []; } catch (e) { rows = []; }
  root.replaceChildren();
  if (!rows.length) {
    const p = document.createElement('div');
    p.className = 'pempty';
    p.textContent = 'No projects yet: create one from a start image.';
    root.appendChild(p);
    return;
  }
  for (const r of rows) {
    const card = document.createElement('div');
    card.className = 'pcard' + (r.name === selected ? ' sel' : '');
    card.setAttribute('role', 'listitem');
    card.dataset.name = r.name;
    let img;
    if (r.thumb) {
      img = document.createElement('img');
      img.src = r.thumb;
      img.alt = `start image of ${r.name}`;
    } else {
      img = document.createElement('div');
      img.className = 'noimg';
    }
    const name = document.createElement('h3');
    name.className = 'pname';
    name.textContent = r.name;
    const meta = document.createElement('div');
    meta.className = 'pmeta';
    meta.textContent = r.duration_s == null ? `${r.model} · storyboard unreadable`
      : `${r.duration_s.toFixed(1)} s · ${r.clips} clip${r.clips === 1 ? '' : 's'} · ${r.model}`;
    const edit = document.createElement('div');
    edit.className = 'pedit';
    edit.textContent = ago(r.updated_at);
    edit.title = r.updated_at;
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = 'Open';
    open.setAttribute('aria-label', `Open project ${r.name}`);
    open.addEventListener('click', (ev) => { ev.stopPropagation(); trigger('open_project', {name: r.name}); });
    card.addEventListener('click', () => {
      selected = r.name;
      root.querySelectorAll('.pcard').forEach(c => c.classList.toggle('sel', c.dataset.name === selected));
      trigger('pick', {name: r.name});
    });
    card.append(img, name, meta, edit, open);
    root.appendChild(card);
  }
}

draw();
watch('value', draw);
