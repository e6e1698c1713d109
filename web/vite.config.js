// Vite build of the editor: relative asset URLs (base './') so the page works
// behind a path prefix; the output is dist/index.html plus dist/assets/.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 2000 },
  server: { proxy: { '/api': { target: 'http://127.0.0.1:8188', ws: true } } },
});
