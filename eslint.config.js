// Type-aware lint: the rules that catch what tsc does not (floating promises, non-exhaustive switches).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Imports that belong to one place: the database client to src/store/, execa to src/net/ and the
// one process module (a minimal child environment, timeouts, never a shell). Flat config replaces a
// rule's options per file instead of merging them, so each group of files lists all that apply.
const POSTGRES = { name: 'postgres', message: 'Only src/store/ imports postgres.' };
const EXECA = {
  name: 'execa',
  message: 'Run programs through src/process/run.ts (run, spawnChild): only it and src/net/ import execa.',
};
const EXECA_HOMES = ['src/net/**', 'src/process/run.ts'];
const restrictImports = (...paths) => ({ 'no-restricted-imports': ['error', { paths }] });

export default tseslint.config(
  {
    ignores: ['eslint.config.js', 'dist/**', 'node_modules/**', 'var/**', 'bench/results/**', 'bin/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true, requireDefaultForNonUnion: false },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      'no-console': 'off',
    },
  },
  {
    files: ['src/**/*.ts', 'bench/**/*.ts'],
    ignores: ['src/store/**', ...EXECA_HOMES],
    rules: restrictImports(POSTGRES, EXECA),
  },
  { files: EXECA_HOMES, rules: restrictImports(POSTGRES) },
  { files: ['src/store/**/*.ts'], rules: restrictImports(EXECA) },
  // tests drive real processes (the CLI, pgrep, ip) as harnesses: only the database client is kept out
  { files: ['machines/**/*.ts', 'test/**/*.ts'], rules: restrictImports(POSTGRES) },
  {
    files: ['machines/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                'postgres',
                'execa',
                'serialport',
                '@serialport/*',
                'ws',
                'pino',
                'node:*',
                'fs',
                'child_process',
                'net',
                '../src/*',
                '../src/**',
              ],
              message: 'machines/ is pure: effects are named in setup() and provided by src/.',
            },
          ],
        },
      ],
    },
  },
  {
    // the inspector's page: plain browser JavaScript, served as is
    files: ['src/inspector/page/**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      parserOptions: { projectService: false, project: null },
      sourceType: 'module',
      globals: Object.fromEntries(
        [
          'window',
          'document',
          'location',
          'history',
          'localStorage',
          'fetch',
          'WebSocket',
          'URLSearchParams',
          'requestAnimationFrame',
          'performance',
          'setTimeout',
          'clearTimeout',
          'setInterval',
          'console',
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
  {
    // plain Node scripts run by npm (no TypeScript project): the untyped rules only
    files: ['scripts/**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      parserOptions: { projectService: false, project: null },
      globals: { console: 'readonly', process: 'readonly' },
    },
  },
);
