/*
 * capsearch uploads, the "already stored" check: before a file is sent, hash-worker.js hashes it
 * (SHA-256, off the main thread) and the server is asked whether those bytes are already stored
 * (GET /api/images?sha256=). Only a stored image that sending again would not change counts: a
 * failed one is sent again (that retries its caption), and when the server cannot say the file is
 * sent and the server's own duplicate check answers.
 *
 * Needs: nothing from the page; the worker is started with the first file. Loaded first of the
 * upload scripts: it creates `window.capsearch.uploads` and puts `lookup` on it, for upload.js:
 *
 *   lookup.hashFile(u)          Promise of the lowercase hex SHA-256 of u.file (u.id names the
 *                               request); rejects with 'read' (the file cannot be read) or 'hash'
 *   lookup.storedImage(sha256)  Promise of the stored image (GET /api/images' item) or null
 */
(function () {
  'use strict';

  // A stored image in one of these states is not sent again; a failed one is (that retries its caption).
  var KEPT = { received: 1, captioning: 1, ready: 1 };
  var LOOKUP_TIMEOUT_MS = 10000;

  var hasher = null; // hash-worker.js, started with the first file
  var hashing = new Map(); // upload id → {resolve, reject}

  function startHasher() {
    var worker = new Worker('/static/js/hash-worker.js');
    worker.onmessage = function (e) {
      var p = hashing.get(e.data.id);
      if (!p) return;
      hashing.delete(e.data.id);
      if (e.data.sha256) p.resolve(e.data.sha256);
      else p.reject(e.data.error);
    };
    // A worker that could not start (its script or hash-wasm missing) fails what it was given; the
    // next file starts a new one.
    worker.onerror = function () {
      worker.terminate();
      if (hasher === worker) hasher = null;
      hashing.forEach(function (p) { p.reject('hash'); });
      hashing.clear();
    };
    return worker;
  }

  // Lowercase hex; rejects with 'read' (the file cannot be read) or 'hash'.
  function hashFile(u) {
    if (!hasher) hasher = startHasher();
    var worker = hasher;
    return new Promise(function (resolve, reject) {
      hashing.set(u.id, { resolve: resolve, reject: reject });
      worker.postMessage({ id: u.id, file: u.file });
    });
  }

  // The stored image with these bytes when sending them again would change nothing; otherwise null,
  // also when the server cannot say (offline, rate limited, an error): the upload then goes ahead.
  function storedImage(sha256) {
    var abort = new AbortController();
    var timer = window.setTimeout(function () { abort.abort(); }, LOOKUP_TIMEOUT_MS);
    return fetch('/api/images?sha256=' + sha256, {
      headers: { Accept: 'application/json' },
      cache: 'no-store',
      signal: abort.signal,
    }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (page) {
      var image = page && Array.isArray(page.items) ? page.items[0] : null;
      return image && image.status in KEPT ? image : null;
    }).catch(function () {
      return null;
    }).finally(function () {
      window.clearTimeout(timer);
    });
  }

  window.capsearch.uploads = { lookup: { hashFile: hashFile, storedImage: storedImage } };
})();
