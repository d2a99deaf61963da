/*
 * capsearch voice search (docs/protocol.md, "Voice"). The microphone button in the search box
 * records: getUserMedia → an AudioContext at 16 kHz → the `pcm-capture` AudioWorklet
 * (pcm-worklet.js: mono, 16-bit) → binary frames (kind 0x02, encoding 0x01 int16 LE, the stream id)
 * about every 200 ms over the page's socket, after `voice.start` was answered by `voice.accepted`.
 * While recording: a level meter and a clock; the same button, the panel's Stop button or Escape
 * stops, which sends the audio still buffered and then `voice.stop`.
 *
 * `voice.partial` text is shown live in #voice-transcript; `voice.final` replaces it and stays.
 * `voice.hits` puts what was searched into the search box and swaps the server's rendered results
 * panel (partials/search_results.html, the same as a typed search) into #search-results: the search
 * runs once, on the server. After the stop, the recording plays back in #voice-audio (a WAV blob).
 * `voice.error` and problems with the microphone (denied, missing, insecure page) are shown in the
 * panel and as a toast; the socket stays usable and a new recording can start at once.
 */
(function () {
  'use strict';

  var button = document.getElementById('voice-button');
  var panel = document.getElementById('voice-panel');
  var input = document.getElementById('search-input');
  var results = document.getElementById('search-results');
  if (!button || !panel || !input) return;
  var statusText = document.getElementById('voice-status');
  var level = document.getElementById('voice-level');
  var clock = document.getElementById('voice-time');
  var transcript = document.getElementById('voice-transcript');
  var message = document.getElementById('voice-message');
  var playback = document.getElementById('voice-playback');
  var audio = document.getElementById('voice-audio');
  var stopButton = panel.querySelector('[data-action="voice-stop"]');
  var socket = window.capsearch.socket;
  var announce = window.capsearch.announce;
  var toast = window.capsearch.toast;

  var RATE = 16000;
  var CHUNK = RATE / 5; // 200 ms
  var PCM_KIND = 0x02;
  var S16LE = 0x01;
  var ACCEPT_TIMEOUT_MS = 10000;
  var FINAL_TIMEOUT_MS = 60000;
  var STATUS = {
    opening: 'Waiting for the microphone…',
    starting: 'Connecting…',
    recording: 'Listening…',
    stopping: 'Transcribing…',
    transcribing: 'Transcribing…',
    searching: 'Finding photos…',
    done: 'Done',
    failed: 'Stopped',
  };
  var CAPTURING = { opening: 1, starting: 1, recording: 1 };
  var TITLES = {
    no_speech: 'No speech heard',
    audio_too_long: 'Recording too long',
    busy: 'The server is busy',
    too_many_streams: 'Too many recordings at once',
    rate_limited: 'Too many recordings in a short time',
    frame_too_small: 'Audio frame too short',
    bad_pcm: 'Audio could not be read',
    stream_timeout: 'Recording dropped',
    connection_lost: 'Connection lost',
    permission_denied: 'Microphone blocked',
    no_microphone: 'No microphone found',
    insecure: 'Microphone unavailable on this page',
  };

  var rec = null; // the current recording
  var audioUrl = null;
  var shown = 0; // the level meter's value, falling back smoothly

  // ---- small helpers ------------------------------------------------------------------------

  function newId() {
    var b = new Uint8Array(10);
    crypto.getRandomValues(b);
    return 'v' + Array.prototype.map.call(b, function (x) { return x.toString(16).padStart(2, '0'); }).join('');
  }

  function timeText(seconds) {
    var s = Math.floor(seconds);
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  // The binary frame: kind, encoding, id length, id (ASCII), then int16 little-endian samples.
  function frame(id, pcm) {
    var buf = new ArrayBuffer(3 + id.length + pcm.length * 2);
    var view = new DataView(buf);
    view.setUint8(0, PCM_KIND);
    view.setUint8(1, S16LE);
    view.setUint8(2, id.length);
    for (var i = 0; i < id.length; i++) view.setUint8(3 + i, id.charCodeAt(i));
    var at = 3 + id.length;
    for (var j = 0; j < pcm.length; j++) view.setInt16(at + j * 2, pcm[j], true);
    return buf;
  }

  function wavBlob(chunks, samples) {
    var buf = new ArrayBuffer(44 + samples * 2);
    var v = new DataView(buf);
    function text(at, s) { for (var i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); }
    text(0, 'RIFF'); v.setUint32(4, 36 + samples * 2, true); text(8, 'WAVE');
    text(12, 'fmt '); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, RATE, true); v.setUint32(28, RATE * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
    text(36, 'data'); v.setUint32(40, samples * 2, true);
    var at = 44;
    chunks.forEach(function (pcm) {
      for (var i = 0; i < pcm.length; i++, at += 2) v.setInt16(at, pcm[i], true);
    });
    return new Blob([buf], { type: 'audio/wav' });
  }

  // ---- what the panel shows -----------------------------------------------------------------

  function setState(state) {
    panel.setAttribute('data-state', state);
    statusText.textContent = STATUS[state] || '';
    var capturing = state in CAPTURING;
    button.setAttribute('aria-pressed', capturing ? 'true' : 'false');
    button.title = capturing ? 'Stop recording (Esc)' : 'Search by voice';
    button.classList.toggle('recording', capturing);
    stopButton.hidden = !capturing;
    if (!capturing) setLevel(0, true);
    // Speaking is using the page, though no input events come (idle.js listens for this).
    document.dispatchEvent(new CustomEvent('capsearch:activity'));
  }

  function setLevel(rms, reset) {
    // -60 dBFS … 0 dBFS onto 0 … 1, rising at once and falling back gently.
    var v = rms > 0 ? Math.max(0, Math.min(1, (20 * Math.log10(rms) + 60) / 60)) : 0;
    shown = reset ? 0 : Math.max(v, shown * 0.8);
    level.value = shown;
  }

  function setTranscript(text, state) {
    transcript.textContent = text;
    transcript.setAttribute('data-state', text ? state : 'empty');
  }

  function showMessage(code, detail) {
    var title = TITLES[code] || 'Voice search failed';
    detail = detail || '';
    // The server's detail may start with the same words ("No speech heard: …"): say them once.
    if (detail.toLowerCase().indexOf(title.toLowerCase()) === 0) {
      detail = detail.slice(title.length).replace(/^[\s:.,;-]+/, '');
      detail = detail.charAt(0).toUpperCase() + detail.slice(1);
    }
    if (code === 'no_speech') detail += ' Speak a little closer to the microphone and try again.';
    message.textContent = '';
    var strong = document.createElement('strong');
    strong.textContent = title + '. ';
    message.appendChild(strong);
    message.appendChild(document.createTextNode(detail));
    message.setAttribute('data-code', code);
    message.hidden = false;
    panel.hidden = false;
    toast(title + '. ' + (detail || 'Try again.'));
  }

  function clearMessage() {
    message.hidden = true;
    message.textContent = '';
    message.setAttribute('data-code', '');
  }

  function showPlayback(r) {
    if (!r.samples) return;
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = URL.createObjectURL(wavBlob(r.chunks, r.samples));
    audio.src = audioUrl;
    playback.hidden = false;
  }

  // ---- recording ----------------------------------------------------------------------------

  function microphoneProblem(err) {
    var name = err && err.name;
    if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
      return ['permission_denied', 'This page may not use the microphone. Allow it for this site ' +
        '(the icon in the address bar), then press the microphone button again.'];
    }
    if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') {
      return ['no_microphone', 'Connect a microphone, then press the microphone button again.'];
    }
    if (name === 'NotReadableError' || name === 'AbortError') {
      return ['no_microphone', 'The microphone could not be started; another app may be using it.'];
    }
    return ['no_microphone', 'The microphone could not be started (' + (err && err.message || name || 'unknown error') + ').'];
  }

  function start() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showMessage('insecure', 'Browsers only allow the microphone on secure pages: open capsearch over ' +
        'HTTPS or at http://localhost.');
      return;
    }
    if (!window.AudioContext || !window.AudioWorkletNode) {
      showMessage('no_microphone', 'This browser cannot record audio for voice search (no AudioWorklet).');
      return;
    }
    if (!socket.isOpen()) {
      showMessage('connection_lost', 'The page is not connected to the server; wait until it says Live.');
      return;
    }
    // A recording still being transcribed is dropped: the new one is what the person wants now.
    if (rec && rec.state !== 'failed' && rec.state !== 'done') cancel(rec);
    var r = rec = { id: newId(), state: 'opening', chunks: [], samples: 0, pending: [], accepted: false,
      captureDone: false, stopSent: false, maxSeconds: 30, final: false };
    clearMessage();
    setTranscript('', 'empty');
    playback.hidden = true;
    clock.textContent = '0:00';
    panel.hidden = false;
    setState('opening');
    navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
      r.stream = stream;
      if (rec !== r || r.state !== 'opening') { teardown(r); return null; }
      return openGraph(r, stream);
    }).then(function (ok) {
      if (!ok || rec !== r || r.state !== 'opening') return;
      r.state = 'starting';
      setState('starting');
      socket.send({ type: 'voice.start', id: r.id, sample_rate: RATE });
      r.timer = window.setTimeout(function () {
        if (rec === r && !r.accepted && r.state !== 'failed' && r.state !== 'done') {
          fail(r, 'internal_error', 'The server did not answer; try again.');
        }
      }, ACCEPT_TIMEOUT_MS);
      announce('Recording. Press Escape or the microphone button to stop.');
    }).catch(function (err) {
      teardown(r);
      if (rec !== r || r.state !== 'opening') return;
      var problem = microphoneProblem(err);
      fail(r, problem[0], problem[1]);
    });
  }

  function openGraph(r, stream) {
    // A 16 kHz context: Chromium resamples the microphone itself. A browser that cannot connect a
    // microphone to a context of another rate gets one at its own rate; the worklet resamples then.
    function build(options) {
      var ctx = new AudioContext(options);
      r.ctx = ctx;
      return ctx.audioWorklet.addModule('/static/js/pcm-worklet.js').then(function () {
        var source = ctx.createMediaStreamSource(stream);
        var node = new AudioWorkletNode(ctx, 'pcm-capture', {
          numberOfInputs: 1,
          numberOfOutputs: 1,
          processorOptions: { targetRate: RATE, chunkSamples: CHUNK, levelSamples: RATE / 20 },
        });
        var mute = ctx.createGain();
        mute.gain.value = 0; // pulled by the destination, heard by nobody
        source.connect(node);
        node.connect(mute);
        mute.connect(ctx.destination);
        node.port.onmessage = function (e) { onWorklet(r, e.data); };
        r.node = node;
        return ctx.resume().then(function () { return true; });
      });
    }
    return build({ sampleRate: RATE }).catch(function (err) {
      if (r.ctx) r.ctx.close().catch(function () {});
      r.ctx = null;
      if (err && err.name === 'NotSupportedError') return build({});
      throw err;
    });
  }

  function onWorklet(r, data) {
    if (!data) return;
    if (data.type === 'level') {
      if (r.state in CAPTURING) setLevel(data.rms, false);
      return;
    }
    if (data.type !== 'pcm') return;
    if (data.pcm.length) {
      r.chunks.push(data.pcm);
      r.samples += data.pcm.length;
      if (r.accepted && !r.stopSent) socket.sendBinary(frame(r.id, data.pcm));
      else r.pending.push(data.pcm);
      clock.textContent = timeText(r.samples / RATE) + ' / ' + timeText(r.maxSeconds);
    }
    // Stop before the server's cap would end the recording with an error.
    if (r.state === 'recording' && r.samples / RATE >= r.maxSeconds - 0.5) {
      stop(r);
      announce('Stopped at the ' + r.maxSeconds + ' second limit.');
    }
    if (data.last) {
      teardown(r);
      r.captureDone = true;
      showPlayback(r);
      sendStop(r);
    }
  }

  function teardown(r) {
    if (r.flushTimer) window.clearTimeout(r.flushTimer);
    if (r.node) { r.node.port.onmessage = null; r.node.disconnect(); r.node = null; }
    if (r.stream) { r.stream.getTracks().forEach(function (t) { t.stop(); }); r.stream = null; }
    if (r.ctx) { r.ctx.close().catch(function () {}); r.ctx = null; }
  }

  function sendStop(r) {
    if (!r.captureDone || !r.accepted || r.stopSent || rec !== r || r.state === 'failed' || r.state === 'done') return;
    r.pending.forEach(function (pcm) { socket.sendBinary(frame(r.id, pcm)); });
    r.pending = [];
    r.stopSent = true;
    socket.send({ type: 'voice.stop', id: r.id });
    r.state = 'transcribing';
    setState('transcribing');
    r.timer = window.setTimeout(function () {
      if (rec === r && !r.final) fail(r, 'internal_error', 'No transcript arrived; try again.');
    }, FINAL_TIMEOUT_MS);
  }

  function stop(r) {
    if (!r || !(r.state in CAPTURING)) return;
    if (r.state === 'opening') { // nothing was sent yet: just let go of the microphone
      teardown(r);
      r.state = 'done';
      setState('idle');
      panel.hidden = !transcript.textContent && message.hidden;
      return;
    }
    r.state = 'stopping';
    setState('stopping');
    // The worklet answers with the samples it still holds (`last`); then voice.stop goes out.
    if (r.node) r.node.port.postMessage({ type: 'flush' });
    r.flushTimer = window.setTimeout(function () { onWorklet(r, { type: 'pcm', pcm: new Int16Array(0), last: true }); }, 1000);
  }

  function cancel(r) {
    if (!r) return;
    teardown(r);
    if (r.state !== 'opening' && !r.final && r.state !== 'failed' && r.state !== 'done') socket.send({ type: 'voice.cancel', id: r.id });
    if (r.timer) window.clearTimeout(r.timer);
    r.state = 'done';
    setState('idle');
  }

  function fail(r, code, detail) {
    teardown(r);
    if (r.timer) window.clearTimeout(r.timer);
    var had = r.state;
    r.state = 'failed';
    setState('failed');
    if (!r.final && had !== 'opening') showPlayback(r);
    if (code === 'no_speech') setTranscript('', 'empty');
    showMessage(code, detail);
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
        if (r.state === 'starting') { r.state = 'recording'; setState('recording'); }
        r.pending.forEach(function (pcm) { if (!r.stopSent) socket.sendBinary(frame(r.id, pcm)); });
        r.pending = [];
        sendStop(r);
        break;
      case 'voice.partial':
        if (!r.final && msg.text) setTranscript(msg.text, 'partial');
        break;
      case 'voice.final':
        r.final = true;
        setTranscript(msg.text, 'final');
        input.value = msg.text;
        r.state = 'searching';
        setState('searching');
        break;
      case 'voice.hits':
        if (r.timer) window.clearTimeout(r.timer);
        r.state = 'done';
        setState('done');
        // The server already searched and rendered the results panel (the same template as a typed
        // search): shown as it is, with the address a reload or a shared link lands on.
        input.value = msg.query;
        htmx.swap(results, msg.html, { swapStyle: 'innerHTML' });
        window.history.replaceState(null, '', '/?' + new URLSearchParams({ q: msg.query }).toString());
        break;
      case 'voice.error':
        fail(r, msg.code, msg.detail);
        break;
      case 'error':
        fail(r, msg.code, msg.detail);
        break;
    }
  }

  // ---- wiring -------------------------------------------------------------------------------

  button.addEventListener('click', function () {
    if (rec && rec.state in CAPTURING) stop(rec);
    else start();
  });
  stopButton.addEventListener('click', function () { stop(rec); button.focus(); });
  panel.querySelector('[data-action="voice-close"]').addEventListener('click', function () {
    if (rec && !(rec.state === 'failed' || rec.state === 'done')) cancel(rec);
    panel.hidden = true;
    button.focus();
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
