// simsearch search page: plain JavaScript, no build step, no external assets.
//
// Every request goes to this router with a URL relative to the page (so a path prefix in
// front of the router works). With API keys on, the key travels only in the X-API-Key
// header: thumbnails are then fetched with fetch() and shown from blob: URLs (an <img src>
// cannot send a header), lazily as they scroll into view. Ids are 63-bit integers: they
// are taken as strings from each result's `url`, never through Number().
//
// Collections: the picker is filled from GET /collections (default: its `default`) and
// shown only when there are several; searches then go to collections/<name>/search/…,
// thumbnails come from each hit's own `url` (collections/<name>/images/<id>), and the
// choice is kept in the URL (?collection=). A router without /collections (or one that
// refuses to list them) is searched through the routes without a collection, as before.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = 'simsearch.apiKey';
  const needsKey = document.documentElement.dataset.apiKey === 'required';

  const el = {
    form: $('search-form'), file: $('file'), drop: $('drop'), k: $('k'),
    collectionBox: $('collection-box'), collection: $('collection'),
    nprobe: $('nprobe'), refine: $('refine'), advanced: $('advanced'),
    keyBox: $('key-box'), key: $('api-key'), remember: $('remember-key'),
    preview: $('preview'), previewImg: $('preview-img'), previewCaption: $('preview-caption'),
    message: $('message'), error: $('error'), partial: $('partial'),
    results: $('results'), summary: $('summary'), empty: $('empty'), grid: $('grid'),
    health: $('health'), shards: $('shards'), refresh: $('refresh'),
    viewer: $('viewer'), viewerTitle: $('viewer-title'), viewerImg: $('viewer-img'),
    viewerMeta: $('viewer-meta'), viewerMore: $('viewer-more'), viewerOpen: $('viewer-open'),
    viewerClose: $('viewer-close'),
  };

  // ---- state -------------------------------------------------------------------------
  let apiKey = '';            // memory only, unless "remember" is ticked (sessionStorage)
  let query = null;           // {kind: 'file', file} | {kind: 'similar', id, path}
  let inFlight = null;        // AbortController of the running search
  let blobUrls = [];          // object URLs of the current grid, revoked on the next one
  let previewUrl = null;      // object URL shown as the query image
  const loading = new WeakMap();  // img → promise of its keyed load
  let observer = null;
  let viewerHit = null;
  let collections = [];       // summaries from GET /collections ([]: routes without one)
  let defaultCollection = '';
  let collection = '';        // the chosen one ('' = the routes without a collection)

  // ---- API key ------------------------------------------------------------------------
  function initKey() {
    let stored = null;
    try { stored = sessionStorage.getItem(KEY_STORE); } catch (e) { stored = null; }
    if (stored) {
      apiKey = stored;
      el.key.value = stored;
      el.remember.checked = true;
    }
    el.keyBox.hidden = !(needsKey || stored);
    el.key.addEventListener('input', () => { apiKey = el.key.value.trim(); saveKey(); });
    el.remember.addEventListener('change', saveKey);
  }

  function saveKey() {
    try {
      if (el.remember.checked && apiKey) sessionStorage.setItem(KEY_STORE, apiKey);
      else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage disabled: memory only */ }
  }

  function authHeaders() {
    return apiKey ? { 'X-API-Key': apiKey } : {};
  }

  // ---- messages -----------------------------------------------------------------------
  function say(text) { el.message.textContent = text; }

  function showError(text, detail) {
    el.error.replaceChildren();
    const strong = document.createElement('strong');
    strong.textContent = text;
    el.error.append(strong);
    if (detail) {
      const small = document.createElement('span');
      small.className = 'detail';
      small.textContent = detail;
      el.error.append(small);
    }
    el.error.hidden = false;
  }

  function clearError() { el.error.hidden = true; el.error.replaceChildren(); }

  // A human sentence for an error answer ({status, error, detail} from the router).
  function explain(status, body) {
    const code = body && body.error;
    const detail = body && typeof body.detail === 'string' ? body.detail : '';
    switch (true) {
      case status === 401:
        return apiKey
          ? ['The API key was not accepted. Check it and search again.', '']
          : ['This router needs an API key: enter it in the API key field and search again.', ''];
      case status === 429 || code === 'rate_limited':
        return ['Too many searches in a short time: wait a moment and search again.', detail];
      case status === 413 || code === 'payload_too_large' || code === 'image_too_large':
        return ['The file is too large for this service.', detail];
      case status === 415 || code === 'unsupported_media_type':
        return ['That file is not an image this service can read. '
          + 'Use a JPEG, PNG, WebP, GIF, BMP or TIFF photo.', detail];
      case code === 'corrupt_image':
        return ['The image is damaged or truncated and cannot be decoded.', detail];
      case code === 'empty_input':
        return ['Choose an image first.', detail];
      case code === 'collection_not_found':
        return [`The collection “${collection}” is not served (any more). Choose another.`,
          detail];
      case status === 403:
        return [`This API key may not search the collection “${collection}”.`, detail];
      case status === 404:
        return ['That image is not in the index any more.', detail];
      case status === 400 || status === 422:
        return ['The search settings were refused.', detail];
      case status === 503:
        return ['The cluster is not ready to answer yet. Try again in a moment.', detail];
      case status === 502 || status === 504:
        return ['A service behind the router failed to answer.', detail];
      default:
        return [`The search failed (HTTP ${status}).`, detail];
    }
  }

  // ---- search -------------------------------------------------------------------------
  function intParam(input) {
    const raw = input.value.trim();
    if (raw === '') return null;
    const value = Number(raw);
    return Number.isInteger(value) ? String(value) : null;
  }

  function params() {
    const p = new URLSearchParams();
    const k = intParam(el.k);
    if (k !== null) p.set('k', k);
    const nprobe = intParam(el.nprobe);
    if (nprobe !== null) p.set('nprobe', nprobe);
    const refine = intParam(el.refine);
    if (refine !== null) p.set('refine', refine);
    return p;
  }

  function validControls() {
    for (const input of [el.k, el.nprobe, el.refine]) {
      if (!input.checkValidity()) {
        if (input !== el.k) el.advanced.open = true;
        showError(`Check “${input.labels[0].textContent}”: ${input.validationMessage}`, '');
        input.focus();
        return false;
      }
    }
    return true;
  }

  async function run() {
    if (!query) { showError('Choose an image first.', ''); el.file.focus(); return; }
    if (!validControls()) return;
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    clearError();
    el.results.dataset.state = 'loading';
    el.results.setAttribute('aria-busy', 'true');
    say('Searching…');
    const p = params();
    let request;
    if (query.kind === 'file') {
      const data = new FormData();
      data.append('file', query.file, query.file.name || 'pasted-image');
      request = fetch(`${base()}search/image?${p}`, {
        method: 'POST', body: data, headers: authHeaders(), signal: controller.signal,
      });
    } else {
      request = fetch(`${base()}search/similar/${encodeURIComponent(query.id)}?${p}`, {
        headers: authHeaders(), signal: controller.signal,
      });
    }
    let response;
    let body = null;
    try {
      response = await request;
      try { body = await response.json(); } catch (e) { body = null; }
    } catch (e) {
      if (controller.signal.aborted) return;
      finish('error');
      showError('Cannot reach the router. Is the cluster running?', String(e.message || e));
      say('');
      return;
    }
    if (controller.signal.aborted) return;
    inFlight = null;
    if (!response.ok || !body || body.status !== 'success') {
      const [text, detail] = explain(response.status, body);
      if (response.status === 401) { el.keyBox.hidden = false; el.key.focus(); }
      clearGrid();
      finish('error');
      showError(text, detail);
      say('');
      return;
    }
    render(body);
    finish('done');
  }

  function finish(state) {
    el.results.dataset.state = state;
    el.results.removeAttribute('aria-busy');
  }

  // ---- results ------------------------------------------------------------------------
  // A hit's url: ".../images/<id>" or ".../collections/<name>/images/<id>".
  const HIT_URL = /\/((?:collections\/[^/?#]+\/)?images\/(\d+))$/;

  function idOf(hit) {
    // The id as a string from the result's url (".../images/<id>"): exact for 63 bits.
    // A JSON number would already have lost the low bits, so there is no fallback to it.
    const m = HIT_URL.exec(hit.url || '');
    return m ? m[2] : null;
  }

  // The hit's image, relative to the page (so a path prefix in front keeps working).
  function hitImageUrl(hit) {
    const m = HIT_URL.exec(hit.url || '');
    return m ? m[1] : null;
  }

  // Where the routes of the chosen collection are, relative to the page.
  const base = () => (collection ? `collections/${encodeURIComponent(collection)}/` : '');
  const imageUrl = (id) => `${base()}images/${encodeURIComponent(id)}`;
  const percent = (x) => `${(100 * x).toFixed(x < 1 && x > 0.99 ? 1 : 0)} %`;

  function clearGrid() {
    if (observer) observer.disconnect();
    for (const url of blobUrls) URL.revokeObjectURL(url);
    blobUrls = [];
    el.grid.replaceChildren();
    el.summary.hidden = true;
    el.partial.hidden = true;
    el.empty.hidden = false;
  }

  function render(answer) {
    clearGrid();
    const hits = answer.results || [];
    $('sum-coverage').textContent = percent(answer.coverage);
    $('sum-partitions').textContent =
      `${answer.partitions_answered} of ${answer.partitions} answered`;
    $('sum-version').textContent = answer.index_version;
    $('sum-took').textContent = `${Math.round(answer.took_ms)} ms`;
    el.summary.hidden = false;
    if (answer.partial) {
      el.partial.textContent = `Partial answer: only ${answer.partitions_answered} of `
        + `${answer.partitions} partitions answered (coverage ${percent(answer.coverage)}). `
        + 'Some similar images may be missing.';
      el.partial.hidden = false;
    }
    el.empty.hidden = hits.length > 0;
    if (!hits.length) el.empty.textContent = 'No results.';
    observer = apiKey ? new IntersectionObserver(onVisible, { rootMargin: '300px' }) : null;
    el.grid.replaceChildren(...hits.map(card));
    const what = query && query.kind === 'similar' ? `images like ${query.path}` : 'results';
    say(`${hits.length} ${what} in ${Math.round(answer.took_ms)} ms`
      + (answer.partial ? ` (partial: coverage ${percent(answer.coverage)})` : '') + '.');
  }

  function card(hit) {
    const id = idOf(hit);
    const src = hitImageUrl(hit);
    const li = document.createElement('li');
    li.className = 'card';
    li.dataset.id = id || '';
    li.dataset.path = hit.path;

    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'thumb';
    open.setAttribute('aria-label', `Open ${hit.path} (rank ${hit.rank})`);
    const img = document.createElement('img');
    img.alt = hit.path;
    img.width = 320;
    img.height = 240;
    img.decoding = 'async';
    img.loading = 'lazy';
    img.dataset.src = src || '';
    if (!src) {
      img.classList.add('failed');
    } else if (observer) {
      img.classList.add('pending');
      observer.observe(img);
    } else {
      img.src = src;
    }
    open.append(img);
    open.disabled = !id;
    open.addEventListener('click', () => openViewer(hit, id, img));

    const meta = document.createElement('p');
    meta.className = 'meta';
    const rank = document.createElement('span');
    rank.className = 'rank';
    rank.textContent = `#${hit.rank}`;
    const score = document.createElement('span');
    score.className = 'score';
    score.title = 'cosine similarity';
    score.textContent = hit.similarity_score.toFixed(3);
    meta.append(rank, ' ', score);

    const path = document.createElement('p');
    path.className = 'path';
    path.textContent = hit.path;

    const more = document.createElement('button');
    more.type = 'button';
    more.className = 'more';
    more.textContent = 'More like this';
    more.setAttribute('aria-label', `More like ${hit.path}`);
    more.disabled = !id;
    more.addEventListener('click', () => moreLike(id, hit.path, img));

    li.append(open, meta, path, more);
    return li;
  }

  // With an API key, images come through fetch() with the header, as blob: URLs.
  async function fetchBlobUrl(url) {
    const response = await fetch(url, { headers: authHeaders(), redirect: 'manual' });
    if (response.type === 'opaqueredirect') {
      // A presigned object-store URL: following it would send the key there too.
      throw new Error('the router redirects images to the object store');
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return URL.createObjectURL(await response.blob());
  }

  function loadWithKey(img) {
    if (!loading.has(img)) {
      loading.set(img, fetchBlobUrl(img.dataset.src).then((url) => {
        blobUrls.push(url);
        img.src = url;
        img.classList.remove('pending');
      }, (e) => {
        img.classList.remove('pending');
        img.classList.add('failed');
        img.title = `thumbnail not available: ${e.message || e}`;
      }));
    }
    return loading.get(img);
  }

  function onVisible(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      loadWithKey(entry.target);
    }
  }

  function moreLike(id, path, img) {
    query = { kind: 'similar', id, path };
    const src = img.currentSrc || img.src;
    if (blobUrls.includes(src)) {  // keep it alive as the preview when the grid is replaced
      blobUrls = blobUrls.filter((u) => u !== src);
      setPreviewUrl(src);
    }
    showPreview(src || (apiKey ? '' : imageUrl(id)), `Images like ${path}`, path);
    remember(id);
    if (el.viewer.open) el.viewer.close();
    run();
  }

  // ---- full image viewer ----------------------------------------------------------------
  async function openViewer(hit, id, img) {
    viewerHit = { hit, id, img };
    el.viewerTitle.textContent = hit.path;
    el.viewerMeta.textContent = `Rank ${hit.rank} · similarity ${hit.similarity_score.toFixed(3)}`;
    el.viewerImg.alt = hit.path;
    if (img.dataset.src && !img.getAttribute('src')) await loadWithKey(img);
    const src = img.getAttribute('src') || '';
    el.viewerImg.src = src;
    el.viewerOpen.href = src.startsWith('blob:') ? src : img.dataset.src;
    el.viewer.showModal();
  }

  function closeViewer() {
    el.viewer.close();
  }

  // ---- query image: picker, drag and drop, paste ----------------------------------------
  function showPreview(src, caption, alt) {
    el.previewImg.alt = alt;
    if (src) el.previewImg.src = src;
    else el.previewImg.removeAttribute('src');
    el.previewCaption.textContent = caption;
    el.preview.hidden = !src;
  }

  function setPreviewUrl(url) {
    if (previewUrl && previewUrl !== url) URL.revokeObjectURL(previewUrl);
    previewUrl = url;
  }

  function useFile(file) {
    if (!file) return;
    setPreviewUrl(URL.createObjectURL(file));
    query = { kind: 'file', file };
    const name = file.name || 'pasted image';
    showPreview(previewUrl, `Query: ${name}`, `Query image: ${name}`);
    remember(null);
    run();
  }

  function firstFile(list) {
    const files = Array.from(list || []);
    return files.find((f) => f.type.startsWith('image/')) || files[0] || null;
  }

  function initInput() {
    el.file.addEventListener('change', () => useFile(el.file.files[0]));
    el.previewImg.addEventListener('error', () => { el.preview.hidden = true; });
    for (const name of ['dragenter', 'dragover']) {
      el.drop.addEventListener(name, (e) => {
        e.preventDefault();
        e.dataTransfer.dropEffect = 'copy';
        el.drop.classList.add('dragging');
      });
    }
    for (const name of ['dragleave', 'dragend']) {
      el.drop.addEventListener(name, () => el.drop.classList.remove('dragging'));
    }
    el.drop.addEventListener('drop', (e) => {
      e.preventDefault();
      el.drop.classList.remove('dragging');
      useFile(firstFile(e.dataTransfer.files));
    });
    // Dropping a file elsewhere on the page must not navigate away from it.
    window.addEventListener('dragover', (e) => e.preventDefault());
    window.addEventListener('drop', (e) => e.preventDefault());
    document.addEventListener('paste', (e) => {
      const target = e.target;
      if (target instanceof HTMLInputElement && target.type !== 'file') return;
      const file = firstFile(e.clipboardData && e.clipboardData.files);
      if (file) { e.preventDefault(); useFile(file); }
    });
    el.form.addEventListener('submit', (e) => { e.preventDefault(); run(); });
    el.viewerClose.addEventListener('click', closeViewer);
    el.viewerMore.addEventListener('click', () => {
      if (viewerHit) moreLike(viewerHit.id, viewerHit.hit.path, viewerHit.img);
    });
    el.viewer.addEventListener('click', (e) => { if (e.target === el.viewer) closeViewer(); });
    el.viewer.addEventListener('close', () => {
      const card = viewerHit && el.grid.querySelector(`li[data-id="${viewerHit.id}"] .thumb`);
      if (card) card.focus();
    });
  }

  // ---- collections ---------------------------------------------------------------------
  // The page's address says what it shows: ?collection= (only with a picker) and, after
  // "More like this", ?similar=<id> (an id of that collection).
  function remember(similarId) {
    const p = new URLSearchParams();
    if (collections.length > 1 && collection) p.set('collection', collection);
    if (similarId) p.set('similar', similarId);
    const search = p.toString();
    if (`?${search}` !== location.search && (search || location.search)) {
      history.replaceState(null, '', search ? `?${search}` : location.pathname);
    }
  }

  // GET /collections: fill the picker; the wanted one (from the URL) if it is listed, else
  // the router's default. False when the router lists none (routes without a collection).
  async function loadCollections(wanted) {
    let answer;
    try {
      answer = await fetch('collections', { cache: 'no-store', headers: authHeaders() });
    } catch (e) {
      return false;
    }
    const body = answer.ok ? await answer.json().catch(() => null) : null;
    if (!body || !Array.isArray(body.collections) || !body.collections.length) return false;
    collections = body.collections;
    defaultCollection = body.default;
    const names = collections.map((c) => c.name);
    const chosen = [wanted, collection, defaultCollection, names[0]].find((n) => names.includes(n));
    const shown = Array.from(el.collection.options, (o) => o.value);
    if (shown.join('\n') !== names.join('\n')) {  // a refresh leaves an open picker alone
      el.collection.replaceChildren(...collections.map((c) => {
        const option = document.createElement('option');
        option.value = c.name;
        option.textContent = c.name === defaultCollection ? `${c.name} (default)` : c.name;
        return option;
      }));
    }
    el.collection.value = chosen;
    collection = chosen;
    el.collectionBox.hidden = collections.length < 2;
    el.collection.disabled = collections.length < 2;
    return true;
  }

  // Another collection: a file query is searched there again; a "More like this" query
  // named an image of the old collection, so the page starts over.
  function switchCollection() {
    collection = el.collection.value;
    if (inFlight) { inFlight.abort(); inFlight = null; }
    clearGrid();  // its cards are images of the old collection
    clearError();
    finish('empty');
    if (query && query.kind === 'similar') {
      query = null;
      showPreview('', '', '');
      el.empty.textContent = 'Search with an image to see the most similar ones.';
      say(`Collection ${collection}: choose an image to search it.`);
    }
    remember(null);
    showCollection();
    if (query) run();
  }

  // The status panel's numbers for a collection other than the default (GET /stats
  // describes the default one).
  function showCollection() {
    const summary = collections.find((c) => c.name === collection);
    $('st-collection-row').hidden = collections.length < 2;
    $('st-collection').textContent = collection || '–';
    if (!summary || collection === defaultCollection) return false;
    $('st-images').textContent = Number(summary.vectors).toLocaleString('en');
    $('st-model').textContent = summary.model ? `${summary.model} (${summary.dim}-d)` : 'unknown';
    $('st-version').textContent = summary.version || 'none';
    $('st-partitions').textContent = summary.partitions
      ? `${summary.partitions}, coverage ${percent(summary.coverage)}` : 'none';
    return true;
  }

  // ---- cluster status -----------------------------------------------------------------
  function ranges(numbers) {
    const sorted = [...numbers].sort((a, b) => a - b);
    const out = [];
    for (let i = 0; i < sorted.length; i += 1) {
      let j = i;
      while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j += 1;
      out.push(i === j ? `${sorted[i]}` : `${sorted[i]}–${sorted[j]}`);
      i = j;
    }
    return out.join(', ') || 'none';
  }

  async function getJson(url) {
    const response = await fetch(url, { cache: 'no-store' });
    return { ok: response.ok, status: response.status, body: await response.json() };
  }

  // The recall monitor's row for the version queries use now (GET /stats `recall`):
  // sampled real queries re-run exactly, e.g. "live recall@k 0.970 · 123 samples".
  function showLiveRecall(s) {
    const out = $('st-live-recall');
    const rows = (s.recall || []).filter((r) => r.version === s.index_version
      && (!defaultCollection || r.collection === defaultCollection));
    const row = rows[0];
    out.classList.toggle('warn', Boolean(row && row.drift));
    if (!row || row.recall === null || row.recall === undefined) {
      out.textContent = row ? `no samples in the last ${Math.round(row.window_s)} s` : 'not sampled';
      return;
    }
    let text = `live recall@k ${row.recall.toFixed(3)} · ${row.samples} samples`;
    if (row.drift) text += ` (below the build-time ${row.baseline.toFixed(3)}: drift)`;
    out.textContent = text;
  }

  async function refreshStatus() {
    try {
      const [health, stats] = await Promise.all([getJson('health'), getJson('stats')]);
      const h = health.body;
      el.health.textContent = `${h.status}: ${h.detail || ''}`.replace(/: $/, '');
      el.health.dataset.status = h.status;
      const s = stats.body;
      $('st-images').textContent = Number(s.total_vectors).toLocaleString('en');
      $('st-model').textContent = s.model ? `${s.model} (${s.dim}-d)` : 'unknown';
      $('st-version').textContent = s.index_version || 'none';
      $('st-partitions').textContent = s.partitions
        ? `${s.partitions}, coverage ${percent(s.coverage)}` : 'none';
      $('st-defaults').textContent = s.nprobe ? `nprobe ${s.nprobe}, refine ${s.refine}` : '–';
      $('st-recall').textContent = s.recall_probe === null || s.recall_probe === undefined
        ? 'not measured (exact index or older build)'
        : `${s.recall_probe.toFixed(3)} (build-time probe, ${s.probe_queries} queries)`;
      showLiveRecall(s);
      if (s.nprobe) el.nprobe.placeholder = `default ${s.nprobe}`;
      if (s.refine) el.refine.placeholder = `default ${s.refine}`;
      if (collections.length) await loadCollections(collection);
      showCollection();
      el.shards.replaceChildren(...(s.shards || []).map((shard) => {
        const tr = document.createElement('tr');
        const name = shard.ordinal === null || shard.ordinal === undefined
          ? shard.url : `shard-${shard.ordinal}`;
        const cells = [name, shard.state, ranges(shard.ready || []),
          Number(shard.vectors).toLocaleString('en')];
        for (const [i, text] of cells.entries()) {
          const td = document.createElement(i === 0 ? 'th' : 'td');
          if (i === 0) { td.scope = 'row'; td.title = shard.url; }
          td.textContent = text;
          if (i === 1) td.className = `state-${shard.state}`;
          tr.append(td);
        }
        return tr;
      }));
    } catch (e) {
      el.health.textContent = 'The router cannot be reached.';
      el.health.dataset.status = 'unreachable';
    }
  }

  // ---- start --------------------------------------------------------------------------
  async function start() {
    initKey();
    initInput();
    const url = new URLSearchParams(location.search);
    await loadCollections(url.get('collection'));
    el.collection.addEventListener('change', switchCollection);
    // A router that lists its collections only with a key: ask again once one is typed.
    el.key.addEventListener('change', () => {
      if (!collections.length) loadCollections(url.get('collection')).then(showCollection);
    });
    refreshStatus();
    el.refresh.addEventListener('click', refreshStatus);
    setInterval(refreshStatus, 15000);
    const similar = url.get('similar');
    if (similar && /^\d+$/.test(similar)) {
      query = { kind: 'similar', id: similar, path: `image ${similar}` };
      const caption = `Images like image ${similar}`;
      if (apiKey) {
        fetchBlobUrl(imageUrl(similar)).then((blob) => {
          setPreviewUrl(blob);
          showPreview(blob, caption, `image ${similar}`);
        }, () => {});
      } else if (!needsKey) {
        showPreview(imageUrl(similar), caption, `image ${similar}`);
      }
      run();
    }
    remember(query ? query.id : null);
  }

  start();
})();
