/*
 * capsearch uploads: capture files (picker, drag-and-drop, paste), check them, queue them and send
 * them over the page's WebSocket (docs/protocol.md). Everything the server says about a file after
 * its bytes are in arrives as HTML fragments (capsearch-ws.js); control messages arrive through
 * capsearch.socket (page.js) at the sender.
 *
 * Per file: a card in #uploads (upload-cards.js) whose status line the server's fragments replace
 * (queued → captioning → done | failed). At most `data-max-parallel` uploads are in progress at once;
 * the others wait, first in first out. A file the page refuses (type, size) is never sent.
 *
 * Before a file is sent it is hashed and the server is asked whether those bytes are already stored
 * (upload-lookup.js). If they are, the card says "Already in your collection" and links to the
 * collection's card: nothing goes over the socket. Otherwise upload-sender.js streams it in chunks
 * and resumes it after a reconnect.
 *
 * Needs: #dropzone (data-max-bytes, data-types, data-limit-text, data-max-parallel), #uploads,
 * #file-input; capsearch.socket, capsearch.toast (page.js); capsearch.uploads.lookup, .cards and
 * .sender (upload-lookup.js, upload-cards.js, upload-sender.js, loaded before this one).
 */
(function () {
  'use strict';

  var zone = document.getElementById('dropzone');
  var list = document.getElementById('uploads');
  if (!zone || !list) return;
  var input = document.getElementById('file-input');
  var socket = window.capsearch.socket;
  var toast = window.capsearch.toast;
  var lookup = window.capsearch.uploads.lookup;
  var cards = window.capsearch.uploads.cards;

  var MAX_BYTES = parseInt(zone.getAttribute('data-max-bytes'), 10);
  var TYPES = (zone.getAttribute('data-types') || '').split(',');
  var LIMIT_TEXT = zone.getAttribute('data-limit-text') || '';
  var MAX_PARALLEL = parseInt(zone.getAttribute('data-max-parallel'), 10) || 3;
  var ACTIVE = window.capsearch.uploads.sender.ACTIVE;

  var uploads = new Map(); // id → upload
  var waiting = []; // uploads not started yet, first in first out
  var sender = window.capsearch.uploads.sender.create({
    all: uploads, next: next, settle: settle, fail: fail, retryLater: retryLater,
  });

  function newId() {
    var b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return 'u' + Array.prototype.map.call(b, function (x) { return x.toString(16).padStart(2, '0'); }).join('');
  }

  // ---- the queue ----------------------------------------------------------------------------

  function check(file) {
    if (TYPES.indexOf(file.type) < 0) {
      return file.name + ' is not a supported image (' + LIMIT_TEXT + ').';
    }
    if (file.size === 0) return file.name + ' is empty.';
    if (file.size > MAX_BYTES) {
      return file.name + ' is ' + cards.humanSize(file.size) + '; the limit is ' + cards.humanSize(MAX_BYTES) + '.';
    }
    return null;
  }

  function addFiles(files) {
    Array.prototype.forEach.call(files, function (file) {
      var u = { id: newId(), file: file, name: file.name || 'pasted image', size: file.size, mime: file.type };
      var problem = check(file);
      // A local preview only: nothing is sent for a refused file.
      cards.makeCard(u, TYPES.indexOf(file.type) >= 0 ? URL.createObjectURL(file) : null);
      uploads.set(u.id, u);
      if (problem) {
        u.state = 'failed';
        u.card.classList.add('never-sent');
        cards.drawStage(u, 'failed', problem);
        toast(problem);
        return;
      }
      u.state = 'waiting';
      cards.drawStage(u, 'waiting');
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
      var s = cards.statusEl(u);
      if (s) s.removeAttribute('data-stage');
      u.retrying = false;
    }
    cards.drawStage(u, 'uploading');
    // Once per file: a retry after a refusal (a full server, the rate limit) goes straight to sending,
    // and the server's own duplicate check still answers for bytes stored meanwhile.
    var checked = u.sha256 ? Promise.resolve(null) : lookup.hashFile(u).then(function (hex) {
      u.sha256 = hex;
      return u.state === 'starting' ? lookup.storedImage(hex) : null;
    });
    checked.then(function (image) {
      if (u.state !== 'starting') return; // cancelled meanwhile
      if (image) {
        stored(u, image);
        return;
      }
      u.file.arrayBuffer().then(function (buf) {
        u.bytes = new Uint8Array(buf);
        if (u.state === 'starting') sender.start(u);
      }, function () {
        fail(u, 'The browser could not read ' + u.name + '.');
      });
    }, function (why) {
      if (u.state === 'starting') fail(u, 'The browser could not ' + (why === 'read' ? 'read ' : 'hash ') + u.name + '.');
    });
  }

  function stored(u, image) {
    settle(u, 'finished');
    cards.drawStored(u, image);
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
    cards.drawStage(u, 'failed', detail);
    toast(detail);
    settle(u, 'failed');
  }

  // A refusal that passes with time: the file goes back to the head of the queue and tries again.
  function retryLater(u, seconds) {
    u.state = 'waiting';
    u.retrying = true;
    waiting.unshift(u);
    window.setTimeout(next, Math.max(1, seconds || 1) * 1000);
  }

  function cancelOrRemove(u) {
    if (u.state === 'waiting' || u.state in ACTIVE) {
      sender.cancel(u);
      var i = waiting.indexOf(u);
      if (i >= 0) waiting.splice(i, 1);
      cards.drawStage(u, 'failed', 'Cancelled.');
      settle(u, 'cancelled');
      u.button.setAttribute('aria-label', 'Remove ' + u.name + ' from this list');
      return;
    }
    if (u.objectUrl) URL.revokeObjectURL(u.objectUrl);
    uploads.delete(u.id);
    u.card.remove();
  }

  // ---- wiring -------------------------------------------------------------------------------

  socket.onOpen(sender.onOpen);
  socket.onMessage('upload.*', sender.onMessage);
  socket.onMessage('error', sender.onMessage);
  socket.afterMessage(function () { uploads.forEach(cards.syncStage); });

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
