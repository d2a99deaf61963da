/*
 * capsearch uploads, the sender: streams a file's bytes over the page's WebSocket in chunks
 * (docs/protocol.md, "Uploads"). `upload.start` is answered by `upload.accepted` (chunk size, window,
 * the offset to send from); binary frames (kind 0x01, the id, the offset, the bytes) go out with at
 * most `window` chunks unacknowledged; once every byte is acknowledged `upload.end` carries the
 * SHA-256 the server checks them against. A rejected offset is sent again from where the server is;
 * a refusal that passes with time (a full server, the rate limit) puts the file back in the queue.
 * After a reconnect each unfinished upload is resumed (`upload.resume`) from the server's offset, or
 * started again from the first byte if the server lost it.
 *
 * Needs: capsearch.socket and capsearch.toast (page.js), capsearch.uploads.cards (upload-cards.js).
 * Puts `sender` on capsearch.uploads, for upload.js, which owns the queue:
 *
 *   sender.ACTIVE               the states of an upload in progress ('starting', 'sending', 'ending')
 *   sender.create(queue)        the sender of one queue: {all: Map id → upload, next(), settle(u, state),
 *                               fail(u, detail), retryLater(u, seconds)}. Returns {start(u), cancel(u),
 *                               onOpen(), onMessage(msg)}; upload.js hands the last two to the socket.
 *
 * An upload here: {id, name, size, mime, sha256, bytes (Uint8Array), state, startSent, resuming, …}.
 */
(function () {
  'use strict';

  if (!window.capsearch.uploads.cards) return;
  var socket = window.capsearch.socket;
  var toast = window.capsearch.toast;
  var cards = window.capsearch.uploads.cards;

  var ACTIVE = { starting: 1, sending: 1, ending: 1 };
  // Refusals that pass with time (a slot frees up, the rate limit refills): the file waits, then retries.
  var RETRY = { too_many_uploads: 1, rate_limited: 1, server_busy: 1 };

  var encoder = new TextEncoder();

  function create(queue) {
    var uploads = queue.all;

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

    function onMessage(msg) {
      var u = msg.id ? uploads.get(msg.id) : null;
      if (msg.type === 'error') {
        // Chunks still in flight when an upload was cancelled or failed come back as errors: expected.
        if (u && !(u.state in ACTIVE)) return;
        // A recording's own errors are voice.js's to show (or, after voice.stopped, to ignore).
        if (msg.code === 'voice_not_started') return;
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
          cards.drawProgress(u, u.acked);
          pump(u);
          break;
        case 'upload.ack':
          if (u.state !== 'sending') break;
          u.acked = Math.max(u.acked, msg.offset);
          u.pending = u.pending.filter(function (end) { return end > u.acked; });
          cards.drawProgress(u, u.acked);
          pump(u);
          break;
        case 'upload.done':
          cards.drawProgress(u, u.size);
          queue.settle(u, 'finished');
          cards.syncStage(u);
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
        cards.drawProgress(u, 0);
        sendStart(u);
      } else if (msg.code === 'duplicate_upload_id' && !u.resuming) {
        u.resuming = true;
        socket.send({ type: 'upload.resume', id: u.id });
      } else if (msg.code in RETRY) {
        u.startSent = false;
        queue.retryLater(u, msg.retry_after);
      } else {
        queue.fail(u, msg.detail || 'The upload of ' + u.name + ' failed (' + msg.code + ').');
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
      queue.next();
    }

    // The server forgets an upload it was told about; one not started there yet needs no word.
    function cancel(u) {
      if (u.state in ACTIVE && u.startSent) socket.send({ type: 'upload.cancel', id: u.id });
    }

    return { start: sendStart, cancel: cancel, onOpen: onOpen, onMessage: onMessage };
  }

  window.capsearch.uploads.sender = { ACTIVE: ACTIVE, create: create };
})();
