import { stat } from 'node:fs/promises';

/** The path exists now (a symlink counts only when its target does). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
