import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/**
 * The web console's build (`npm run build` runs it): one page, its script and styles, bundled from npm
 * packages into dist/console, which prismd serves at `/`. Nothing is fetched from elsewhere at run time.
 */
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: {
    outDir: fileURLToPath(new URL('../dist/console', import.meta.url)),
    emptyOutDir: true,
    // Module scripts only: no inline script or style the Content-Security-Policy would have to allow.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
    chunkSizeWarningLimit: 1024,
  },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
});
