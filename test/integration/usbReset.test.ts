import { createReadStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { usbReset } from '../../src/detect/usbReset.js';
import { FakeSysfs } from '../../src/sim/fakeSysfs.js';

describe('usbReset', () => {
  let sys: FakeSysfs | undefined;
  afterAll(async () => {
    await sys?.stop();
  });

  it('writes 0 then 1 to authorized (on the fake tree)', async () => {
    sys = new FakeSysfs(await mkdtemp(join(tmpdir(), 'mf-usbreset-')));
    await sys.start();
    await sys.plug({ usbPath: '1-1.3' });
    const dir = sys.deviceDir('1-1.3');
    await usbReset(dir);
    expect(await readFile(join(dir, 'authorized'), 'utf8')).toBe('1');
    // through a FIFO, both writes in order
    const fifo = join(dir, 'fifo');
    await mkdir(fifo);
    await execa('mkfifo', [join(fifo, 'authorized')]);
    const reader = createReadStream(join(fifo, 'authorized'), { flags: 'r+', encoding: 'utf8' });
    let seen = '';
    const both = new Promise<void>((resolve) =>
      reader.on('data', (chunk) => {
        seen += String(chunk);
        if (seen.length >= 2) resolve();
      }),
    );
    await usbReset(fifo, { pauseMs: 10 });
    await both;
    reader.destroy();
    expect(seen).toBe('01');
  });

  it('names the file and the reason when it cannot', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-usbreset-'));
    try {
      await expect(usbReset(join(dir, 'gone'))).rejects.toMatchObject({
        code: 'usb_reset_failed',
        message: expect.stringMatching(/gone\/authorized: no such file/) as unknown,
      });
      if (process.getuid?.() !== 0) {
        await mkdir(join(dir, 'ro'));
        await writeFile(join(dir, 'ro', 'authorized'), '1\n');
        await chmod(join(dir, 'ro', 'authorized'), 0o444);
        await expect(usbReset(join(dir, 'ro'))).rejects.toThrow(/not permitted/);
      }
      await mkdir(join(dir, 'odd', 'authorized'), { recursive: true });
      await expect(usbReset(join(dir, 'odd'))).rejects.toThrow(/odd\/authorized: EISDIR/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
