// Recently used pictures, kept in this browser's localStorage (no account, no server state):
// the drawing page records a picture when it joins it, the index page lists them.

const KEY = 'raster.recent';
// Enough to find one's pictures again without the list growing forever.
const MAX_ENTRIES = 30;

/** Entries `{id, width, height, at}` (at: ms since epoch), most recent first. */
export function recentPictures() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) ?? '[]');
    return Array.isArray(list) ? list.filter((e) => e && typeof e.id === 'string') : [];
  } catch {
    return [];
  }
}

export function rememberPicture({ id, width, height }) {
  const list = recentPictures().filter((e) => e.id !== id);
  list.unshift({ id, width, height, at: Date.now() });
  save(list.slice(0, MAX_ENTRIES));
}

export function forgetPicture(id) {
  save(recentPictures().filter((e) => e.id !== id));
}

function save(list) {
  try {
    localStorage.setItem(KEY, JSON.stringify(list));
  } catch {
    // Storage full or disabled (private mode): the list is a convenience, drawing goes on.
  }
}
