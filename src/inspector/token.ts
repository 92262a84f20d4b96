import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModemfleetError } from '../util/errors.js';

/** Tokens from the environment must be long enough not to be guessed, and header-safe. */
export const API_TOKEN_PATTERN = /^[\x21-\x7e]{16,256}$/;

export interface ApiToken {
  token: string;
  /** `env`: MODEMFLEET_API_TOKEN; `file`: read from the state dir; `generated`: written there now. */
  source: 'env' | 'file' | 'generated';
  file: string | undefined;
}

/**
 * The API's bearer token: MODEMFLEET_API_TOKEN when set, else `<stateDir>/api-token`, generated on
 * first start (32 random bytes, mode 0600). The caller prints a generated token once.
 */
export async function loadApiToken(stateDir: string, fromEnv: string | undefined): Promise<ApiToken> {
  if (fromEnv !== undefined) {
    if (!API_TOKEN_PATTERN.test(fromEnv))
      throw new ModemfleetError(
        'config_invalid',
        'MODEMFLEET_API_TOKEN must be 16-256 printable characters without spaces',
      );
    return { token: fromEnv, source: 'env', file: undefined };
  }
  const file = join(stateDir, 'api-token');
  const existing = await readToken(file);
  if (existing !== undefined) return { token: existing, source: 'file', file };
  await mkdir(stateDir, { recursive: true, mode: 0o711 });
  const token = randomBytes(32).toString('base64url');
  try {
    await writeFile(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // another process wrote it first: use theirs
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const theirs = await readToken(file);
      if (theirs !== undefined) return { token: theirs, source: 'file', file };
    }
    throw new ModemfleetError('token_unwritable', `cannot write the API token to ${file}`, { cause: err });
  }
  return { token, source: 'generated', file };
}

async function readToken(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModemfleetError('token_unreadable', `cannot read the API token in ${file}`, { cause: err });
  }
  const token = text.trim();
  if (!API_TOKEN_PATTERN.test(token))
    throw new ModemfleetError(
      'token_unreadable',
      `${file} does not hold a valid API token (delete it to have a new one generated)`,
    );
  // the token grants control of the farm: nobody but its owner may read it
  if (((await stat(file)).mode & 0o077) !== 0) await chmod(file, 0o600);
  return token;
}

/** Constant-time comparison (both sides hashed first, so lengths do not leak either). */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer ...` header, or undefined. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer[ \t]+(\S{1,512})[ \t]*$/i.exec(header);
  return match?.[1];
}
