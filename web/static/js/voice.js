/*
 * capsearch voice search (docs/protocol.md, "Voice"), the recording: the microphone button in the
 * search box records, through voice-audio.js (the microphone, the AudioWorklet, the PCM frames);
 * voice-panel.js draws what it shows. After `voice.start` is answered by `voice.accepted`, a binary
 * frame goes over the page's socket about every 100 ms (the ones captured before wait). The same
 * button, the panel's Stop button or Escape stops, which sends the audio still buffered and then
 * `voice.stop`; the recording then plays back.
 *
 * `voice.partial` is shown live, its settled words apart from the tentative rest (a server that does not
 * split them sends a hypothesis that is all tentative); `voice.final` replaces it and stays.
 * `voice.hits` puts what was searched into the search box and swaps the server's rendered results
 * panel into #search-results (voice-results.js): the search runs on the server. Live hits
 * (`partial: true`) come while the person speaks and the final ones replace them. `voice.stopped`:
 * the server ended the recording itself (silence after speech, or the cap); the microphone stops as
 * with the Stop button, but nothing more goes out for it, voice.stop included. `voice.error` and
 * problems with the microphone (denied, missing, insecure page) are shown in the panel and as a
 * toast; the socket stays usable and a new recording can start at once. A socket that closes ends
 * the recording: the server has dropped it.
 *
 * Needs: #search-input; capsearch.socket and capsearch.announce (page.js); capsearch.voice.audio,
 * .panel and .results (voice-audio.js, voice-panel.js, voice-results.js, loaded before this one);
 * capsearch.searchFilters (search-filters.js) where the page has them: voice.start carries its options.
 */
(function () {
  'use strict';

  var ui = window.capsearch.voice && window.capsearch.voice.panel;
  var results = window.capsearch.voice && window.capsearch.voice.results;
  var input = document.getElementById('search-input');
  if (!ui || !results || !input) return;
  var audio = window.capsearch.voice.audio;
  var socket = window.capsearch.socket;
  var announce = window.capsearch.announce;

  var RATE = audio.RATE;
  var CAPTURING = ui.CAPTURING;
  var ACCEPT_TIMEOUT_MS = 10000;
  var FINAL_TIMEOUT_MS = 60000;

  var rec = null; // the current recording

  function newId() {
    var b = new Uint8Array(10);
    crypto.getRandomValues(b);
    return 'v' + Array.prototype.map.call(b, function (x) { return x.toString(16).padStart(2, '0'); }).join('');
  }

  // ---- recording ----------------------------------------------------------------------------

  function start() {
    var unavailable = audio.unavailable();
    if (unavailable) {
      ui.showMessage(unavailable[0], unavailable[1]);
      return;
    }
    if (!socket.isOpen()) {
      ui.showMessage('connection_lost', 'The page is not connected to the server; wait until it says Live.');
      return;
    }
    // A recording still being transcribed is dropped: the new one is what the person wants now.
    if (rec && rec.state !== 'failed' && rec.state !== 'done') cancel(rec);
    var r = rec = { id: newId(), state: 'opening', chunks: [], samples: 0, pending: [], accepted: false,
      captureDone: false, stopSent: false, maxSeconds: 30, final: false };
    ui.reset();
    ui.setState('opening');
    audio.microphone().then(function (stream) {
      r.stream = stream;
      if (rec !== r || r.state !== 'opening') { audio.teardown(r); return null; }
      return audio.openGraph(r, stream, function (data) { onWorklet(r, data); });
    }).then(function (ok) {
      if (!ok || rec !== r || r.state !== 'opening') return;
      r.state = 'starting';
      ui.setState('starting');
      // The sort and date range beside the results apply to what is said, as to what is typed.
      var filters = window.capsearch.searchFilters;
      socket.send(Object.assign({ type: 'voice.start', id: r.id, sample_rate: RATE },
        filters ? filters.options() : {}));
      r.timer = window.setTimeout(function () {
        if (rec === r && !r.accepted && r.state !== 'failed' && r.state !== 'done') {
          fail(r, 'internal_error', 'The server did not answer; try again.');
        }
      }, ACCEPT_TIMEOUT_MS);
      announce('Recording. Press Escape or the microphone button to stop.');
    }).catch(function (err) {
      audio.teardown(r);
      if (rec !== r || r.state !== 'opening') return;
      var problem = audio.microphoneProblem(err);
      fail(r, problem[0], problem[1]);
    });
  }

  function onWorklet(r, data) {
    if (!data) return;
    if (data.type === 'level') {
      if (r.state in CAPTURING) ui.setLevel(data.rms, false);
      return;
    }
    if (data.type !== 'pcm') return;
    if (data.pcm.length) {
      r.chunks.push(data.pcm);
      r.samples += data.pcm.length;
      if (r.accepted && !r.stopSent) socket.sendBinary(audio.frame(r.id, data.pcm));
      else r.pending.push(data.pcm);
      ui.showTime(r.samples / RATE, r.maxSeconds);
    }
    // Stop before the server's cap would end the recording with an error.
    if (r.state === 'recording' && r.samples / RATE >= r.maxSeconds - 0.5) {
      stop(r);
      announce('Stopped at the ' + r.maxSeconds + ' second limit.');
    }
    if (data.last) {
      audio.teardown(r);
      r.captureDone = true;
      ui.showPlayback(r);
      sendStop(r);
    }
  }

  function sendStop(r) {
    if (!r.captureDone || !r.accepted || r.stopSent || rec !== r || r.state === 'failed' || r.state === 'done') return;
    r.pending.forEach(function (pcm) { socket.sendBinary(audio.frame(r.id, pcm)); });
    r.pending = [];
    r.stopSent = true;
    socket.send({ type: 'voice.stop', id: r.id });
    awaitFinal(r);
  }

  function awaitFinal(r) {
    r.state = 'transcribing';
    ui.setState('transcribing');
    if (r.timer) window.clearTimeout(r.timer);
    r.timer = window.setTimeout(function () {
      if (rec === r && !r.final) fail(r, 'internal_error', 'No transcript arrived; try again.');
    }, FINAL_TIMEOUT_MS);
  }

  // The server ended the recording (voice.stopped): it drops whatever still comes for this id, so
  // nothing more is sent, voice.stop included; the worklet is still flushed for the playback.
  function stoppedByServer(r, reason) {
    if (r.final) return; // out of order: the recording is already over
    var sent = r.stopSent;
    r.stopSent = true;
    r.serverStopped = true;
    r.pending = [];
    ui.setNote(reason, r.maxSeconds);
    announce(reason === 'silence' ? 'Stopped: you went quiet.' : 'Stopped at the ' + r.maxSeconds + ' second limit.');
    if (r.state in CAPTURING) stop(r);
    if (!sent) awaitFinal(r); // once voice.stop went out the page already waits for the final
  }

  function stop(r) {
    if (!r || !(r.state in CAPTURING)) return;
    if (r.state === 'opening') { // nothing was sent yet: just let go of the microphone
      audio.teardown(r);
      r.state = 'done';
      ui.setState('idle');
      ui.hideIfEmpty();
      return;
    }
    r.state = 'stopping';
    ui.setState('stopping');
    // The worklet answers with the samples it still holds (`last`); then voice.stop goes out.
    audio.flush(r, function (data) { onWorklet(r, data); });
  }

  function cancel(r) {
    if (!r) return;
    audio.teardown(r);
    if (r.state !== 'opening' && !r.final && r.state !== 'failed' && r.state !== 'done') socket.send({ type: 'voice.cancel', id: r.id });
    if (r.timer) window.clearTimeout(r.timer);
    r.state = 'done';
    ui.setState('idle');
    results.dropLive();
  }

  function fail(r, code, detail) {
    audio.teardown(r);
    if (r.timer) window.clearTimeout(r.timer);
    var had = r.state;
    r.state = 'failed';
    ui.setState('failed');
    if (!r.final && had !== 'opening') ui.showPlayback(r);
    if (code === 'no_speech') ui.setTranscript('', 'empty');
    results.dropLive();
    ui.showMessage(code, detail);
  }

  // ---- messages from the server ------------------------------------------------------------

  function onMessage(msg) {
    var r = rec;
    if (!r || msg.id !== r.id || r.state === 'failed' || r.state === 'done') return;
    switch (msg.type) {
      case 'voice.accepted':
        if (r.timer) window.clearTimeout(r.timer);
        r.accepted = true;
        r.maxSeconds = msg.max_seconds || r.maxSeconds;
        if (r.state === 'starting') { r.state = 'recording'; ui.setState('recording'); }
        r.pending.forEach(function (pcm) { if (!r.stopSent) socket.sendBinary(audio.frame(r.id, pcm)); });
        r.pending = [];
        sendStop(r);
        break;
      case 'voice.partial':
        if (r.final) break;
        if (typeof msg.settled === 'string' && typeof msg.tentative === 'string') {
          if (msg.settled || msg.tentative) ui.setPartial(msg.settled, msg.tentative);
        } else if (msg.text) {
          ui.setPartial('', msg.text); // nothing said what has settled: all of it may change
        }
        break;
      case 'voice.stopped':
        stoppedByServer(r, msg.reason);
        break;
      case 'voice.final':
        r.final = true;
        ui.setTranscript(msg.text, 'final');
        input.value = msg.text;
        r.state = 'searching';
        ui.setState('searching');
        break;
      case 'voice.hits':
        if (msg.partial) {
          if (!r.final) results.live(msg); // late live hits never cover the final ones
          break;
        }
        if (r.timer) window.clearTimeout(r.timer);
        r.state = 'done';
        ui.setState('done');
        results.final(msg);
        break;
      case 'voice.error':
        fail(r, msg.code, msg.detail);
        break;
      case 'error':
        // A voice.stop that crossed voice.stopped on the way finds the recording already stopping.
        if (r.serverStopped && msg.code === 'voice_not_started') break;
        fail(r, msg.code, msg.detail);
        break;
    }
  }

  // ---- wiring -------------------------------------------------------------------------------

  ui.button.addEventListener('click', function () {
    if (rec && rec.state in CAPTURING) stop(rec);
    else start();
  });
  ui.stopButton.addEventListener('click', function () { stop(rec); ui.button.focus(); });
  ui.closeButton.addEventListener('click', function () {
    if (rec && !(rec.state === 'failed' || rec.state === 'done')) cancel(rec);
    ui.hide();
    ui.button.focus();
  });
  document.addEventListener('keydown', function (e) {
    if (e.key !== 'Escape' || !rec || !(rec.state in CAPTURING)) return;
    e.preventDefault();
    stop(rec);
  });

  socket.onMessage('voice.*', onMessage);
  socket.onMessage('error', onMessage);
  socket.onClose(function () {
    // The server ends a recording whose socket closed: there is nothing to resume.
    if (rec && !(rec.state === 'failed' || rec.state === 'done')) {
      fail(rec, 'connection_lost', 'The connection to the server dropped, so this recording was lost. ' +
        'Try again once the page says Live.');
    }
  });
})();
