import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** The path exists now (a symlink counts only when its target does). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The executable `name` on PATH (or `name` itself when it is a path), or undefined. */
export async function findProgram(
  name: string,
  path = process.env['PATH'] ?? '',
): Promise<string | undefined> {
  const candidates = name.includes('/') ? [name] : path.split(':').map((d) => join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}
