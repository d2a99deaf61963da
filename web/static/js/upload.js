/*
 * capsearch uploads: capture files (picker, drag-and-drop, paste), stream them over the page's
 * WebSocket in chunks (docs/protocol.md), draw progress. Everything the server says about a file
 * after its bytes are in arrives as HTML fragments (capsearch-ws.js); control messages arrive here
 * through capsearch.socket (page.js).
 *
 * Per file: a card in #uploads with a local preview, a <progress>, and a status line
 * `#upload-<id>-status` that the server's fragments replace (queued → captioning → done | failed).
 * At most `data-max-parallel` uploads are in progress at once; each keeps at most `window` chunks
 * unacknowledged. After a reconnect unfinished uploads are resumed from the server's offset.
 *
 * Before a file is sent, hash-worker.js hashes it (SHA-256, off the main thread) and the server is
 * asked whether those bytes are already stored (GET /api/images?sha256=). If they are, and not as
 * a failed image, the card says "Already in your collection" and links to the collection's card:
 * nothing goes over the socket. A failed image is sent again, which retries its caption; if the
 * server cannot say, the file is sent and the server's own duplicate check answers.
 */
(function () {
  'use strict';

  var zone = document.getElementById('dropzone');
  var list = document.getElementById('uploads');
  if (!zone || !list) return;
  var input = document.getElementById('file-input');
  var socket = window.capsearch.socket;
  var announce = window.capsearch.announce;
  var toast = window.capsearch.toast;

  var MAX_BYTES = parseInt(zone.getAttribute('data-max-bytes'), 10);
  var TYPES = (zone.getAttribute('data-types') || '').split(',');
  var LIMIT_TEXT = zone.getAttribute('data-limit-text') || '';
  var MAX_PARALLEL = parseInt(zone.getAttribute('data-max-parallel'), 10) || 3;
  var ACTIVE = { starting: 1, sending: 1, ending: 1 };
  // Refusals that pass with time (a slot frees up, the rate limit refills): the file waits, then retries.
  var RETRY = { too_many_uploads: 1, rate_limited: 1, server_busy: 1 };
  var LABELS = { waiting: 'Waiting', uploading: 'Uploading', stored: 'Already in your collection', failed: 'Failed' };
  // A stored image in one of these states is not sent again; a failed one is (that retries its caption).
  var KEPT = { received: 1, captioning: 1, ready: 1 };
  var LOOKUP_TIMEOUT_MS = 10000;

  var uploads = new Map(); // id → upload
  var waiting = []; // uploads not started yet, first in first out
  var encoder = new TextEncoder();

  // ---- small helpers ------------------------------------------------------------------------

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function newId() {
    var b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return 'u' + Array.prototype.map.call(b, function (x) { return x.toString(16).padStart(2, '0'); }).join('');
  }

  function humanSize(n) {
    var mb = n / (1024 * 1024);
    if (mb >= 1) return (Number.isInteger(mb) ? mb : mb.toFixed(1)) + ' MB';
    if (n >= 1024) return Math.round(n / 1024) + ' KB';
    return n + ' B';
  }

  // ---- hashing and asking the server --------------------------------------------------------

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

  // ---- cards --------------------------------------------------------------------------------

  function makeCard(u, objectUrl) {
    var li = el('li', 'upload');
    li.id = 'upload-' + u.id;
    li.setAttribute('data-stage', 'waiting');
    var thumb = el('div', 'upload-thumb');
    if (objectUrl) {
      var img = el('img');
      img.src = objectUrl;
      img.alt = '';
      thumb.appendChild(img);
    }
    li.appendChild(thumb);
    var info = el('div', 'upload-info');
    var head = el('div', 'upload-head');
    var name = el('span', 'upload-name', u.name);
    name.title = u.name;
    head.appendChild(name);
    head.appendChild(el('span', 'upload-size', humanSize(u.size)));
    info.appendChild(head);
    var bar = el('div', 'upload-bar');
    u.progress = el('progress', 'upload-progress');
    u.progress.max = 100;
    u.progress.value = 0;
    u.progress.setAttribute('aria-label', 'Upload progress of ' + u.name);
    bar.appendChild(u.progress);
    u.pct = el('span', 'upload-pct', '0%');
    bar.appendChild(u.pct);
    info.appendChild(bar);
    var status = el('div', 'card-status');
    status.id = 'upload-' + u.id + '-status';
    info.appendChild(status);
    li.appendChild(info);
    u.button = el('button', 'upload-cancel', '×');
    u.button.type = 'button';
    u.button.setAttribute('aria-label', 'Cancel upload of ' + u.name);
    li.appendChild(u.button);
    u.card = li;
    u.objectUrl = objectUrl;
    list.insertBefore(li, list.firstChild);
  }

  function statusEl(u) {
    return document.getElementById('upload-' + u.id + '-status');
  }

  // The page draws the status line only until the server takes over (or to show a failure).
  function drawStage(u, stage, detail) {
    var s = statusEl(u);
    if (!s) return;
    var current = s.getAttribute('data-stage');
    if (stage !== 'failed' && current && !(current in { waiting: 1, uploading: 1 })) return;
    if (stage === 'failed' && current === 'failed') return;
    s.setAttribute('data-stage', stage);
    s.textContent = '';
    s.appendChild(el('span', 'stage-badge stage-' + stage, LABELS[stage] || stage));
    if (detail) s.appendChild(el('p', 'error-detail', detail));
    syncStage(u);
  }

  // Nothing was sent: the bytes are stored already. The collection's card is the one that follows
  // the image from here (captioning → done), so this card links to it.
  function drawStored(u, image) {
    var s = statusEl(u);
    if (!s) return;
    s.setAttribute('data-stage', 'stored');
    s.textContent = '';
    s.appendChild(el('span', 'stage-badge stage-stored', LABELS.stored));
    if (image.status === 'ready') {
      if (image.caption) s.appendChild(el('p', 'caption', image.caption));
      var img = u.card.querySelector('.upload-thumb img');
      if (img) {
        img.src = image.thumbnail_url;
        URL.revokeObjectURL(u.objectUrl);
        u.objectUrl = null;
      }
    }
    var link = el('a', 'upload-link');
    if (document.getElementById('image-' + image.id)) {
      link.href = '#image-' + image.id;
      link.textContent = 'Show it in the collection';
    } else {
      // Older than the cards this page shows.
      link.href = image.url;
      link.target = '_blank';
      link.rel = 'noopener';
      link.textContent = 'Open the stored image';
    }
    s.appendChild(link);
    u.card.classList.add('never-sent');
    syncStage(u);
  }

  function drawProgress(u, bytes) {
    var pct = u.size ? Math.min(100, Math.floor((bytes / u.size) * 100)) : 100;
    u.progress.value = pct;
    u.pct.textContent = pct + '%';
  }

  function syncStage(u) {
    var s = statusEl(u);
    var stage = s ? s.getAttribute('data-stage') : null;
    if (!stage || stage === u.lastStage) return;
    u.lastStage = stage;
    u.card.setAttribute('data-stage', stage);
    if (stage === 'done' || stage === 'failed' || u.state === 'finished') {
      u.button.setAttribute('aria-label', 'Remove ' + u.name + ' from this list');
    }
    if (stage === 'waiting' || stage === 'uploading') return;
    var extra = s.querySelector('.caption, .error-detail');
    var label = s.querySelector('.stage-badge');
    announce(u.name + ': ' + (label ? label.textContent : stage) + (extra ? '. ' + extra.textContent : ''));
  }

  // ---- the upload flow ----------------------------------------------------------------------

  function check(file) {
    if (TYPES.indexOf(file.type) < 0) {
      return file.name + ' is not a supported image (' + LIMIT_TEXT + ').';
    }
    if (file.size === 0) return file.name + ' is empty.';
    if (file.size > MAX_BYTES) {
      return file.name + ' is ' + humanSize(file.size) + '; the limit is ' + humanSize(MAX_BYTES) + '.';
    }
    return null;
  }

  function addFiles(files) {
    Array.prototype.forEach.call(files, function (file) {
      var u = { id: newId(), file: file, name: file.name || 'pasted image', size: file.size, mime: file.type };
      var problem = check(file);
      // A local preview only: nothing is sent for a refused file.
      makeCard(u, TYPES.indexOf(file.type) >= 0 ? URL.createObjectURL(file) : null);
      uploads.set(u.id, u);
      if (problem) {
        u.state = 'failed';
        u.card.classList.add('never-sent');
        drawStage(u, 'failed', problem);
        toast(problem);
        return;
      }
      u.state = 'waiting';
      drawStage(u, 'waiting');
      waiting.push(u);
    });
    next();
  }

  function activeCount() {
    var n = 0;
    uploads.forEach(function (u) { if (u.state in ACTIVE) n++; });
    return n;
  }

  function next() {
    while (waiting.length && activeCount() < MAX_PARALLEL) start(waiting.shift());
  }

  function start(u) {
    u.state = 'starting';
    if (u.retrying) {
      // The server's refusal drew a failed status card; this is a new try, so the page draws again.
      var s = statusEl(u);
      if (s) s.removeAttribute('data-stage');
      u.retrying = false;
    }
    drawStage(u, 'uploading');
    // Once per file: a retry after a refusal (a full server, the rate limit) goes straight to sending,
    // and the server's own duplicate check still answers for bytes stored meanwhile.
    var checked = u.sha256 ? Promise.resolve(null) : hashFile(u).then(function (hex) {
      u.sha256 = hex;
      return u.state === 'starting' ? storedImage(hex) : null;
    });
    checked.then(function (image) {
      if (u.state !== 'starting') return; // cancelled meanwhile
      if (image) {
        stored(u, image);
        return;
      }
      u.file.arrayBuffer().then(function (buf) {
        u.bytes = new Uint8Array(buf);
        if (u.state === 'starting') sendStart(u);
      }, function () {
        fail(u, 'The browser could not read ' + u.name + '.');
      });
    }, function (why) {
      if (u.state === 'starting') fail(u, 'The browser could not ' + (why === 'read' ? 'read ' : 'hash ') + u.name + '.');
    });
  }

  function stored(u, image) {
    settle(u, 'finished');
    drawStored(u, image);
  }

  function sendStart(u) {
    if (!socket.isOpen()) return; // sent by onOpen
    u.startSent = true;
    u.resuming = false;
    socket.send({ type: 'upload.start', id: u.id, name: u.name, size: u.size, mime: u.mime });
  }

  function frame(u, from, to) {
    var id = encoder.encode(u.id);
    var buf = new Uint8Array(2 + id.length + 8 + (to - from));
    buf[0] = 0x01;
    buf[1] = id.length;
    buf.set(id, 2);
    new DataView(buf.buffer).setBigUint64(2 + id.length, BigInt(from), false);
    buf.set(u.bytes.subarray(from, to), 10 + id.length);
    return buf.buffer;
  }

  function pump(u) {
    if (!socket.isOpen() || u.state !== 'sending') return;
    while (u.pending.length < u.window && u.sent < u.size) {
      var to = Math.min(u.sent + u.chunkSize, u.size);
      socket.sendBinary(frame(u, u.sent, to));
      u.pending.push(to);
      u.sent = to;
    }
    if (u.acked >= u.size) {
      u.state = 'ending';
      // The hash the server checks the bytes against: the upload ends here or not at all.
      socket.send({ type: 'upload.end', id: u.id, sha256: u.sha256 });
    }
  }

  function settle(u, state) {
    u.state = state;
    u.bytes = null;
    next();
  }

  function fail(u, detail) {
    if (u.state === 'failed') return;
    var wasWaiting = waiting.indexOf(u);
    if (wasWaiting >= 0) waiting.splice(wasWaiting, 1);
    drawStage(u, 'failed', detail);
    toast(detail);
    settle(u, 'failed');
  }

  function onMessage(msg) {
    var u = msg.id ? uploads.get(msg.id) : null;
    if (msg.type === 'error') {
      // Chunks still in flight when an upload was cancelled or failed come back as errors: expected.
      if (u && !(u.state in ACTIVE)) return;
      toast(msg.detail || 'Something went wrong on the server.');
      return;
    }
    if (!u || !(u.state in ACTIVE)) return;
    switch (msg.type) {
      case 'upload.accepted':
        u.resuming = false;
        u.chunkSize = msg.chunk_size;
        u.window = Math.max(1, msg.window);
        u.acked = u.sent = msg.offset;
        u.pending = [];
        u.ignoreBadOffsets = 0;
        u.state = 'sending';
        drawProgress(u, u.acked);
        pump(u);
        break;
      case 'upload.ack':
        if (u.state !== 'sending') break;
        u.acked = Math.max(u.acked, msg.offset);
        u.pending = u.pending.filter(function (end) { return end > u.acked; });
        drawProgress(u, u.acked);
        pump(u);
        break;
      case 'upload.done':
        drawProgress(u, u.size);
        settle(u, 'finished');
        syncStage(u);
        break;
      case 'upload.rejected':
        onRejected(u, msg);
        break;
    }
  }

  function onRejected(u, msg) {
    if (msg.code === 'bad_offset' && typeof msg.offset === 'number') {
      // Chunks already in flight behind the rejected one are rejected too: ignore those.
      if (u.ignoreBadOffsets > 0) { u.ignoreBadOffsets--; return; }
      u.ignoreBadOffsets = Math.max(0, u.pending.length - 1);
      u.acked = u.sent = msg.offset;
      u.pending = [];
      pump(u);
    } else if (msg.code === 'unknown_upload' && u.resuming) {
      u.acked = u.sent = 0; // the server lost it: start again from the first byte
      drawProgress(u, 0);
      sendStart(u);
    } else if (msg.code === 'duplicate_upload_id' && !u.resuming) {
      u.resuming = true;
      socket.send({ type: 'upload.resume', id: u.id });
    } else if (msg.code in RETRY) {
      u.state = 'waiting';
      u.startSent = false;
      u.retrying = true;
      waiting.unshift(u);
      window.setTimeout(next, Math.max(1, msg.retry_after || 1) * 1000);
    } else {
      fail(u, msg.detail || 'The upload of ' + u.name + ' failed (' + msg.code + ').');
    }
  }

  // A new connection knows none of this page's uploads: each one under way is resumed from what
  // the server kept, or started if its upload.start never went out.
  function onOpen() {
    uploads.forEach(function (u) {
      if (!(u.state in ACTIVE) || !u.bytes) return;
      u.pending = [];
      if (u.startSent) {
        u.state = 'starting';
        u.resuming = true;
        socket.send({ type: 'upload.resume', id: u.id });
      } else {
        sendStart(u);
      }
    });
    next();
  }

  function cancelOrRemove(u) {
    if (u.state === 'waiting' || u.state in ACTIVE) {
      if (u.state in ACTIVE && u.startSent) socket.send({ type: 'upload.cancel', id: u.id });
      var i = waiting.indexOf(u);
      if (i >= 0) waiting.splice(i, 1);
      drawStage(u, 'failed', 'Cancelled.');
      settle(u, 'cancelled');
      u.button.setAttribute('aria-label', 'Remove ' + u.name + ' from this list');
      return;
    }
    if (u.objectUrl) URL.revokeObjectURL(u.objectUrl);
    uploads.delete(u.id);
    u.card.remove();
  }

  // ---- wiring -------------------------------------------------------------------------------

  socket.onOpen(onOpen);
  socket.onMessage('upload.*', onMessage);
  socket.onMessage('error', onMessage);
  socket.afterMessage(function () { uploads.forEach(syncStage); });

  input.addEventListener('change', function () {
    addFiles(input.files);
    input.value = '';
  });

  function hasFiles(e) {
    return e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types || [], 'Files') >= 0;
  }
  ['dragenter', 'dragover'].forEach(function (name) {
    document.addEventListener(name, function (e) {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
      zone.classList.add('dragging');
    });
  });
  document.addEventListener('dragleave', function (e) {
    if (!e.relatedTarget) zone.classList.remove('dragging');
  });
  document.addEventListener('drop', function (e) {
    zone.classList.remove('dragging');
    if (!hasFiles(e)) return;
    e.preventDefault();
    addFiles(e.dataTransfer.files);
  });
  document.addEventListener('paste', function (e) {
    var files = e.clipboardData && e.clipboardData.files;
    if (files && files.length) addFiles(files);
  });
  zone.addEventListener('click', function (e) {
    if (e.target === zone || e.target.closest('.drop-icon, h1, .drop-limits')) input.click();
  });

  list.addEventListener('click', function (e) {
    var btn = e.target.closest('.upload-cancel');
    if (!btn) return;
    var u = uploads.get(btn.closest('.upload').id.slice('upload-'.length));
    if (u) cancelOrRemove(u);
  });
})();
