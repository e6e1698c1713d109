// Vite build of the editor. Output: dist/index.html, dist/assets/index-<hash>.js and .css,
// dist/scripts/{app,api}.js (shims for ComfyUI-style extension imports).
//
// Asset URLs are relative (base './') so the page works behind a path prefix. The entry
// script and stylesheet are requested by a small inline loader that appends the page's
// `?token=` to their URLs, so a server started with an auth token can serve them; the
// bundle is one chunk (no lazily loaded pieces that would miss the token).
import { defineConfig } from 'vite';

function tokenLoader() {
  return {
    name: 'loom-token-loader',
    enforce: 'post',
    transformIndexHtml(html) {
      const js = /<script type="module" crossorigin src="([^"]+)"><\/script>\s*/.exec(html);
      const css = /<link rel="stylesheet" crossorigin href="([^"]+)">\s*/.exec(html);
      if (!js) return html;
      let out = html.replace(js[0], '');
      if (css) out = out.replace(css[0], '');
      const loader = `<script>(() => {
  const t = new URLSearchParams(location.search).get('token');
  const q = t ? '?token=' + encodeURIComponent(t) : '';
  ${css ? `const l = document.createElement('link'); l.rel = 'stylesheet'; l.href = ${JSON.stringify(css[1])} + q; document.head.append(l);` : ''}
  const s = document.createElement('script'); s.type = 'module'; s.src = ${JSON.stringify(js[1])} + q; document.head.append(s);
})();</script>\n`;
      return out.replace('</head>', `${loader}</head>`);
    },
  };
}

export default defineConfig({
  base: './',
  plugins: [tokenLoader()],
  build: {
    outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 2000,
    rollupOptions: { output: { inlineDynamicImports: true } },
  },
  server: { proxy: { '/api': { target: 'http://127.0.0.1:8188', ws: true } } },
});
