// The index page: open or create a picture by name and size, and list the recently used ones.

import { forgetPicture, recentPictures } from './recent.js';

const $ = (id) => document.getElementById(id);

function randomId() {
  const words = ['red', 'blue', 'quiet', 'bright', 'wild', 'calm', 'tiny', 'grand'];
  const things = ['fox', 'sea', 'hill', 'kite', 'moon', 'leaf', 'wave', 'star'];
  const pick = (list) => list[Math.floor(Math.random() * list.length)];
  return `${pick(words)}-${pick(things)}-${Math.floor(Math.random() * 9000 + 1000)}`;
}

function when(at) {
  const s = Math.round((Date.now() - at) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(at).toLocaleDateString();
}

function renderRecent() {
  const list = recentPictures();
  const ul = $('recent');
  ul.replaceChildren();
  $('empty').hidden = list.length > 0;
  for (const entry of list) {
    const li = document.createElement('li');
    const link = document.createElement('a');
    link.href = `/p/${encodeURIComponent(entry.id)}`;
    const thumb = document.createElement('img');
    thumb.loading = 'lazy';
    thumb.alt = '';
    thumb.src = `/pictures/${encodeURIComponent(entry.id)}/snapshot.png`;
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = entry.id;
    const meta = document.createElement('span');
    meta.className = 'muted small';
    meta.textContent = `${entry.width} × ${entry.height} · ${when(entry.at)}`;
    link.append(thumb, name, meta);
    const forget = document.createElement('button');
    forget.type = 'button';
    forget.className = 'forget';
    forget.title = 'Remove from this list (the picture stays)';
    forget.textContent = '×';
    forget.addEventListener('click', () => {
      forgetPicture(entry.id);
      renderRecent();
    });
    li.append(link, forget);
    ul.append(li);
  }
}

$('random').addEventListener('click', () => {
  $('id').value = randomId();
});

$('create').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('id').value.trim();
  const query = new URLSearchParams({ width: $('width').value, height: $('height').value });
  location.href = `/p/${encodeURIComponent(id)}?${query}`;
});

if (!$('id').value) $('id').value = randomId();
renderRecent();
