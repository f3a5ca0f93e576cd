"""The search page served at `/`: upload an image, see the most similar ones.

Deliberately one self-contained HTML document (no build step, no external assets): it
calls the same public API a program would (`POST /search/image`, `GET /images/{id}`,
`GET /search/similar/{id}`, `GET /health`) and shows how complete each answer was.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>simsearch</title>
<style>
 body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
 h1{margin:0 0 .3rem} .muted{color:#666;font-size:.9rem}
 form{margin:1rem 0;padding:1rem;border:2px dashed #bbb;border-radius:8px}
 #grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.8rem}
 figure{margin:0;border:1px solid #ddd;border-radius:6px;overflow:hidden;background:#fafafa}
 figure img{width:100%;height:150px;object-fit:cover;display:block;cursor:pointer}
 figcaption{padding:.3rem .4rem;font-size:.8rem;word-break:break-all}
 .warn{background:#fff3cd;border:1px solid #e0c36b;padding:.5rem;border-radius:6px}
 .err{background:#fde2e1;border:1px solid #e09a96;padding:.5rem;border-radius:6px}
</style></head><body>
<h1>simsearch</h1>
<div class="muted" id="health">checking the cluster…</div>
<form id="form"><input type="file" id="file" name="file" accept="image/*" required>
 <label>k <input type="number" id="k" value="12" min="1" max="100" style="width:4rem"></label>
 <button type="submit">Search similar images</button></form>
<div id="status"></div><div id="grid"></div>
<script>
const $ = (id) => document.getElementById(id);
async function health() {
  try { const h = await (await fetch('health')).json();
    $('health').textContent = `${h.status}: ${h.total_vectors} images, index ${h.index_version}, `
      + `coverage ${(100 * h.coverage).toFixed(0)} %, shards ${h.shards.up}/${h.shards.total} up`;
  } catch (e) { $('health').textContent = 'router unreachable'; }
}
function show(answer) {
  const s = $('status');
  s.className = answer.partial ? 'warn' : 'muted';
  s.textContent = (answer.partial ? 'PARTIAL answer: ' : '') + `${answer.results.length} results`
    + ` in ${answer.took_ms.toFixed(0)} ms, coverage ${(100 * answer.coverage).toFixed(0)} %`;
  $('grid').replaceChildren(...answer.results.map((r) => {
    const f = document.createElement('figure');
    const img = document.createElement('img');
    img.src = r.url.replace(/^\\//, ''); img.alt = r.path; img.title = 'more like this';
    img.onclick = () => search(fetch(`search/similar/${r.id}?k=${$('k').value}`));
    const c = document.createElement('figcaption');
    c.textContent = `#${r.rank}  ${r.similarity_score.toFixed(3)}  ${r.path}`;
    f.append(img, c); return f; }));
}
async function search(request) {
  $('status').className = 'muted'; $('status').textContent = 'searching…';
  const response = await request; const body = await response.json();
  if (!response.ok) { $('status').className = 'err';
    $('status').textContent = `${response.status}: ${body.detail || JSON.stringify(body)}`;
    $('grid').replaceChildren(); return; }
  show(body);
}
$('form').onsubmit = (e) => { e.preventDefault();
  const data = new FormData(); data.append('file', $('file').files[0]);
  search(fetch(`search/image?k=${$('k').value}`, {method: 'POST', body: data})); };
health(); setInterval(health, 10000);
const similar = new URLSearchParams(location.search).get('similar');  // shareable result links
if (similar) search(fetch(`search/similar/${similar}?k=${$('k').value}`));
</script></body></html>
"""
