import { copyFile, mkdir, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * bin/modemfleet.js never runs a stale dist/ silently: a copy of the entry point, the build script
 * and a one-line "CLI" in a scratch checkout (the real dist/ of this worktree is never touched, so
 * the other tests' `node bin/modemfleet.js` are not affected), built with the real `npm run build`
 * script and TypeScript 7.
 */

const repo = join(import.meta.dirname, '..', '..');
let dir: string;

const cli = (said: string): string => `process.stdout.write(${JSON.stringify(said)} + '\\n');\nexport {};\n`;
const modemfleet = () => execa('node', [join(dir, 'bin', 'modemfleet.js')], { reject: false, cwd: dir });
const build = () => execa('node', [join(dir, 'scripts', 'build.mjs')], { reject: false, cwd: dir });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-bin-'));
  for (const d of ['bin', 'scripts', 'src', 'machines']) await mkdir(join(dir, d));
  await copyFile(join(repo, 'bin', 'modemfleet.js'), join(dir, 'bin', 'modemfleet.js'));
  for (const f of ['build.mjs', 'sourceStamp.mjs'])
    await copyFile(join(repo, 'scripts', f), join(dir, 'scripts', f));
  await symlink(join(repo, 'node_modules'), join(dir, 'node_modules'));
  await writeFile(join(dir, 'package.json'), '{ "name": "scratch", "type": "module" }\n');
  const compilerOptions = {
    target: 'ES2023',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    types: ['node'],
    outDir: 'dist',
    rootDir: '.',
    skipLibCheck: true,
  };
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, include: ['src'] }));
  await writeFile(join(dir, 'tsconfig.build.json'), JSON.stringify({ extends: './tsconfig.json' }));
  await writeFile(join(dir, 'src', 'cli.ts'), cli('from the sources, version 1'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('bin/modemfleet.js', () => {
  it('without dist/: runs the sources through tsx, without a warning', async () => {
    const r = await modemfleet();
    expect(r.stdout).toBe('from the sources, version 1');
    expect(r.stderr).toBe('');
  });

  it('after `npm run build`: runs dist/, which carries the stamp of the sources it was built from', async () => {
    expect((await build()).exitCode).toBe(0);
    await writeFile(join(dir, 'dist', 'src', 'cli.js'), cli('from dist, version 1'));
    const r = await modemfleet();
    expect(r.stdout).toBe('from dist, version 1');
    expect(r.stderr).toBe('');
  });

  it('sources changed since the build: runs the sources and says so in one line on stderr', async () => {
    await writeFile(join(dir, 'src', 'cli.ts'), cli('from the sources, version 2'));
    const r = await modemfleet();
    expect(r.stdout).toBe('from the sources, version 2');
    expect(r.stderr).toBe(
      'modemfleet: dist/ is older than the sources (npm run build); running the sources through tsx',
    );
    // a new file counts as much as a changed one; so does a changed tsconfig
    await build();
    expect((await modemfleet()).stderr).toBe('');
    await writeFile(join(dir, 'machines', 'newMachine.ts'), 'export const x = 1;\n');
    expect((await modemfleet()).stderr).toContain('dist/ is older than the sources');
    await unlink(join(dir, 'machines', 'newMachine.ts'));
    expect((await modemfleet()).stderr).toBe('');
  });

  it('a dist/ without a stamp (an older build, or one interrupted) is not trusted either', async () => {
    await unlink(join(dir, 'dist', 'build-stamp.json'));
    const r = await modemfleet();
    expect(r.stdout).toBe('from the sources, version 2');
    expect(r.stderr).toBe(
      'modemfleet: dist/ has no build stamp (npm run build); running the sources through tsx',
    );
  });

  it('a failed build leaves no stamp behind', async () => {
    expect((await build()).exitCode).toBe(0);
    await writeFile(join(dir, 'src', 'cli.ts'), 'const x: number = "not a number";\n');
    expect((await build()).exitCode).not.toBe(0);
    expect((await modemfleet()).stderr).toContain('dist/ has no build stamp');
  });
});
