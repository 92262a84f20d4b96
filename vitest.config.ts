import { defineConfig } from 'vitest/config';

// Two projects: pure tests (no PostgreSQL, no processes) and everything that touches real parts.
// The real-parts project starts one embedded PostgreSQL per run in test/globalSetup.ts.
export default defineConfig({
  test: {
    pool: 'forks',
    teardownTimeout: 30_000,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/property/**/*.test.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: [
            'test/integration/**/*.test.ts',
            'test/e2e/**/*.test.ts',
            'test/browser/**/*.test.ts',
            'test/reliability/**/*.test.ts',
          ],
          globalSetup: ['test/globalSetup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
