import { readdir, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

type Listener = (exists: boolean) => void;

interface Directory {
  timer: NodeJS.Timeout;
  /** File name → listeners. */
  names: Map<string, Set<Listener>>;
  busy: boolean;
}

const directories = new Map<string, Directory>();

/**
 * Whether device paths exist, checked for every watcher of a directory with one `readdir` per
 * interval (instead of a `stat` per path per interval: hundreds of modems polled twice a second
 * each were the largest part of an idle farm's CPU). A symbolic link counts only while its target
 * exists, like `stat`. Listeners are called on every check with the current answer.
 */
export function watchPresence(path: string, intervalMs: number, listener: Listener): () => void {
  const dir = dirname(path);
  const name = basename(path);
  let d = directories.get(dir);
  if (!d) {
    const created: Directory = {
      timer: setInterval(() => void check(dir, created), intervalMs),
      names: new Map(),
      busy: false,
    };
    created.timer.unref();
    directories.set(dir, created);
    d = created;
  }
  const set = d.names.get(name) ?? new Set<Listener>();
  set.add(listener);
  d.names.set(name, set);
  const directory = d;
  return () => {
    set.delete(listener);
    if (set.size === 0) directory.names.delete(name);
    if (directory.names.size === 0) {
      clearInterval(directory.timer);
      if (directories.get(dir) === directory) directories.delete(dir);
    }
  };
}

async function check(dir: string, d: Directory): Promise<void> {
  if (d.busy) return;
  d.busy = true;
  try {
    let present: Set<string>;
    try {
      const entries = await readdir(dir, { withFileTypes: true });
      present = new Set();
      for (const e of entries) {
        if (!d.names.has(e.name)) continue;
        if (
          !e.isSymbolicLink() ||
          (await stat(`${dir}/${e.name}`).then(
            () => true,
            () => false,
          ))
        )
          present.add(e.name);
      }
    } catch {
      present = new Set(); // the directory itself is gone
    }
    for (const [name, listeners] of d.names) for (const l of [...listeners]) l(present.has(name));
  } finally {
    d.busy = false;
  }
}
