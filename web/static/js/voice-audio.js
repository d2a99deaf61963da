/*
 * capsearch voice search, the audio side: the microphone (getUserMedia) → an AudioContext at 16 kHz
 * → the `pcm-capture` AudioWorklet (pcm-worklet.js: mono, 16-bit, chunks of 100 ms and a level) →
 * binary frames for the page's socket (docs/protocol.md, "Voice": kind 0x02, encoding 0x01 int16 LE,
 * the stream id); also the WAV the recording plays back as, and what to say when the microphone
 * cannot be had.
 *
 * Needs: a browser with AudioWorklet; pcm-worklet.js served from this origin (the page's CSP allows
 * scripts from 'self' only). Loaded first of the voice scripts: it creates `window.capsearch.voice`
 * and puts `audio` on it, for voice-panel.js and voice.js. `r` is a recording (voice.js); this
 * module keeps r.stream, r.ctx, r.node and r.flushTimer on it.
 *
 *   audio.RATE                    16000: samples per second sent and played back
 *   audio.unavailable()           [code, detail] when this page or browser cannot record, else null
 *   audio.microphone()            Promise of the microphone's MediaStream (may ask the person)
 *   audio.openGraph(r, stream, onData)   Promise of true once the worklet runs; onData(message)
 *                                 for each {type: 'pcm', pcm, last} or {type: 'level', rms}
 *   audio.flush(r, onData)        ask for the samples the worklet holds (`last`), within a second
 *   audio.teardown(r)             let go of the microphone and the context
 *   audio.frame(id, pcm)          the binary frame (ArrayBuffer) for one chunk
 *   audio.wavBlob(chunks, samples)       the recording as an audio/wav Blob
 *   audio.microphoneProblem(err)  [code, detail] for a getUserMedia or AudioContext failure
 */
(function () {
  'use strict';

  var RATE = 16000;
  // 50 ms: the server hears the end of speech (and starts the final) up to a frame sooner; at 20
  // frames a second per recording the messages still cost next to nothing (docs/benchmarks.md).
  var CHUNK = RATE / 20;
  var PCM_KIND = 0x02;
  var S16LE = 0x01;

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

  function unavailable() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return ['insecure', 'Browsers only allow the microphone on secure pages: open capsearch over ' +
        'HTTPS or at http://localhost.'];
    }
    if (!window.AudioContext || !window.AudioWorkletNode) {
      return ['no_microphone', 'This browser cannot record audio for voice search (no AudioWorklet).'];
    }
    return null;
  }

  function microphone() {
    return navigator.mediaDevices.getUserMedia({ audio: true });
  }

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

  function openGraph(r, stream, onData) {
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
        node.port.onmessage = function (e) { onData(e.data); };
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

  // The worklet answers with the samples it still holds (`last`); when no answer comes within a
  // second (the worklet is gone), onData gets an empty `last` chunk instead.
  function flush(r, onData) {
    if (r.node) r.node.port.postMessage({ type: 'flush' });
    r.flushTimer = window.setTimeout(function () { onData({ type: 'pcm', pcm: new Int16Array(0), last: true }); }, 1000);
  }

  function teardown(r) {
    if (r.flushTimer) window.clearTimeout(r.flushTimer);
    if (r.node) { r.node.port.onmessage = null; r.node.disconnect(); r.node = null; }
    if (r.stream) { r.stream.getTracks().forEach(function (t) { t.stop(); }); r.stream = null; }
    if (r.ctx) { r.ctx.close().catch(function () {}); r.ctx = null; }
  }

  window.capsearch.voice = {
    audio: {
      RATE: RATE,
      unavailable: unavailable,
      microphone: microphone,
      openGraph: openGraph,
      flush: flush,
      teardown: teardown,
      frame: frame,
      wavBlob: wavBlob,
      microphoneProblem: microphoneProblem,
    },
  };
})();
