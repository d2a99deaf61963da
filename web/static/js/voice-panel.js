/*
 * capsearch voice search, the panel: what #voice-panel and the microphone button show. The status
 * line and the button follow the recording's state (the button is pressed while the microphone
 * records), with a note when the server ended the recording itself; a level meter that rises at once
 * and falls back gently; a clock; the transcript in #voice-transcript (a partial one live: its
 * settled words in #voice-settled, plain and read out as they settle, the tentative rest in
 * #voice-tentative, lighter; then the final one, which stays); a problem in #voice-message, titled,
 * and as a toast; the recording played back in #voice-audio (a WAV blob).
 *
 * Needs: #voice-button, #voice-panel and the elements inside it (index.html), capsearch.toast
 * (page.js) and capsearch.voice.audio (voice-audio.js, loaded before). Puts `panel` on
 * capsearch.voice, for voice.js:
 *
 *   panel.button, .stopButton, .closeButton   the controls voice.js listens to
 *   panel.CAPTURING               the states in which the microphone is open
 *   panel.reset()                 a new recording: no message, note, transcript, playback; clock at 0:00
 *   panel.setState(state)         opening | starting | recording | stopping | transcribing |
 *                                 searching | done | failed | idle
 *   panel.setNote(reason, maxSeconds)   the server stopped the recording: 'silence' | 'max_seconds'
 *   panel.setLevel(rms, reset)    the level meter
 *   panel.showTime(seconds, maxSeconds)
 *   panel.setTranscript(text, state)   state 'partial' | 'final' ('empty' when there is no text)
 *   panel.setPartial(settled, tentative)   a partial split into words that settled and the rest
 *   panel.showMessage(code, detail)    a problem, by protocol error code or the page's own
 *   panel.showPlayback(r)         the recording r ({chunks, samples}) as playable audio
 *   panel.hideIfEmpty(), panel.hide()
 */
(function () {
  'use strict';

  var button = document.getElementById('voice-button');
  var panel = document.getElementById('voice-panel');
  if (!button || !panel) return;
  var statusText = document.getElementById('voice-status');
  var level = document.getElementById('voice-level');
  var clock = document.getElementById('voice-time');
  var transcript = document.getElementById('voice-transcript');
  var settledWords = document.getElementById('voice-settled');
  var tentativeWords = document.getElementById('voice-tentative');
  var message = document.getElementById('voice-message');
  var playback = document.getElementById('voice-playback');
  var audio = document.getElementById('voice-audio');
  var stopButton = panel.querySelector('[data-action="voice-stop"]');
  var toast = window.capsearch.toast;
  var wavBlob = window.capsearch.voice.audio.wavBlob;

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

  var audioUrl = null;
  var shown = 0; // the level meter's value, falling back smoothly
  var state = 'idle';
  var note = ''; // why the server stopped the recording, shown before the state's words

  function timeText(seconds) {
    var s = Math.floor(seconds);
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  function showStatus() {
    var words = STATUS[state] || '';
    statusText.textContent = note && words ? note + ' · ' + words : note || words;
  }

  function setState(next) {
    state = next;
    panel.setAttribute('data-state', state);
    showStatus();
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

  function showTime(seconds, maxSeconds) {
    clock.textContent = timeText(seconds) + ' / ' + timeText(maxSeconds);
  }

  function setNote(reason, maxSeconds) {
    note = reason === 'silence' ? 'Stopped: you went quiet'
      : reason === 'max_seconds' ? 'Stopped: reached the ' + maxSeconds + ' s cap' : '';
    panel.setAttribute('data-stopped', reason || '');
    showStatus();
  }

  function setTranscript(text, kind) {
    settledWords.textContent = text;
    tentativeWords.textContent = '';
    transcript.setAttribute('data-state', text ? kind : 'empty');
  }

  function setPartial(settled, tentative) {
    var had = settledWords.textContent;
    // Settled words only grow: the new ones are added as their own text node, so a screen reader
    // reads just them rather than the whole sentence again.
    if (had && settled.indexOf(had) === 0) {
      if (settled.length > had.length) settledWords.appendChild(document.createTextNode(settled.slice(had.length)));
    } else if (settled !== had) {
      settledWords.textContent = settled;
    }
    tentativeWords.textContent = (settled && tentative ? ' ' : '') + tentative;
    transcript.setAttribute('data-state', settled || tentative ? 'partial' : 'empty');
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

  function reset() {
    clearMessage();
    setNote('');
    setTranscript('', 'empty');
    playback.hidden = true;
    clock.textContent = '0:00';
    panel.hidden = false;
  }

  window.capsearch.voice.panel = {
    button: button,
    stopButton: stopButton,
    closeButton: panel.querySelector('[data-action="voice-close"]'),
    CAPTURING: CAPTURING,
    reset: reset,
    setState: setState,
    setLevel: setLevel,
    showTime: showTime,
    setNote: setNote,
    setTranscript: setTranscript,
    setPartial: setPartial,
    showMessage: showMessage,
    showPlayback: showPlayback,
    // Nothing left to show: the panel goes away.
    hideIfEmpty: function () { panel.hidden = !transcript.textContent.trim() && message.hidden; },
    hide: function () { panel.hidden = true; },
  };
})();
