/*
 * capsearch hash worker: the SHA-256 of a File, off the page's main thread (upload-lookup.js).
 *
 * In: {id, file}. Out: {id, sha256} (lowercase hex), or {id, error: 'read' | 'hash'}. Files are hashed
 * one after another, in the order asked, with hash-wasm's SHA-256 (WebAssembly, served from
 * node_modules as /static/vendor/hash-wasm-sha256.js), and read in slices: a large file never has to
 * sit in memory whole. It works on plain-http pages too, where browsers hide crypto.subtle.
 */
'use strict';

importScripts('/static/vendor/hash-wasm-sha256.js');

var SLICE_BYTES = 1024 * 1024;
var hasher = null; // one WebAssembly instance, reset for each file
var queue = Promise.resolve();

function ReadError(cause) {
  this.cause = cause;
}

function readSlice(file, at) {
  return file.slice(at, at + SLICE_BYTES).arrayBuffer().catch(function (err) {
    throw new ReadError(err);
  });
}

function digest(file) {
  var ready = hasher ? Promise.resolve(hasher) : hashwasm.createSHA256().then(function (h) { return (hasher = h); });
  return ready.then(function (h) {
    h.init();
    function from(at) {
      if (at >= file.size) return h.digest('hex');
      return readSlice(file, at).then(function (buf) {
        // The file shrank on disk since it was picked: what is there is not what was chosen.
        if (!buf.byteLength) throw new ReadError(null);
        h.update(new Uint8Array(buf));
        return from(at + buf.byteLength);
      });
    }
    return from(0);
  });
}

self.onmessage = function (e) {
  var id = e.data.id;
  var file = e.data.file;
  queue = queue.then(function () {
    return digest(file).then(function (hex) {
      self.postMessage({ id: id, sha256: hex });
    }, function (err) {
      // A file that cannot be read (moved, deleted, permission gone) is the person's to fix.
      self.postMessage({ id: id, error: err instanceof ReadError ? 'read' : 'hash' });
    });
  });
};
