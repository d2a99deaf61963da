/*
 * pcm-capture: the AudioWorklet processor behind voice search (voice-audio.js loads it with
 * audioWorklet.addModule; it must be a same-origin file: the page's CSP allows scripts from 'self' only).
 *
 * In: the microphone at the context's rate, any number of channels. Out (port messages):
 *   {type: 'pcm', pcm: Int16Array, last: bool}  mono, `targetRate` Hz, signed 16-bit, every
 *                                               `chunkSamples` samples (800 = 50 ms at 16 kHz);
 *                                               `last` answers a {type: 'flush'} with what is left
 *   {type: 'level', rms: number}                the RMS (0..1) of the last `levelSamples` samples
 * Channels are averaged to mono; floats are clamped to [-1, 1] and scaled by 32767. When the context
 * does not run at `targetRate` (a browser that refuses a 16 kHz context for a microphone), the
 * processor resamples: a box filter when decimating, linear interpolation when the rate is lower.
 */
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.targetRate = o.targetRate || 16000;
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.chunkSamples = o.chunkSamples || 800;
    this.levelSamples = o.levelSamples || 800;
    this.chunk = new Int16Array(this.chunkSamples);
    this.fill = 0;
    this.sumSquares = 0;
    this.levelCount = 0;
    this.phase = 0; // resampler position, in input samples
    this.acc = 0;
    this.accCount = 0;
    this.prev = 0;
    this.done = false;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === 'flush') this.flush();
    };
  }

  emit(v) {
    const x = v > 1 ? 1 : v < -1 ? -1 : v || 0;
    this.chunk[this.fill++] = Math.round(x * 32767);
    if (this.fill === this.chunkSamples) this.post(false);
    this.sumSquares += x * x;
    if (++this.levelCount >= this.levelSamples) {
      this.port.postMessage({ type: 'level', rms: Math.sqrt(this.sumSquares / this.levelCount) });
      this.sumSquares = 0;
      this.levelCount = 0;
    }
  }

  post(last) {
    const pcm = this.chunk.slice(0, this.fill);
    this.port.postMessage({ type: 'pcm', pcm, last }, [pcm.buffer]);
    this.fill = 0;
  }

  flush() {
    if (this.done) return;
    this.post(true);
    this.done = true;
  }

  push(x) {
    if (this.step === 1) {
      this.emit(x);
    } else if (this.step > 1) {
      // Decimate: average the input samples that fall into each output sample.
      this.acc += x;
      this.accCount++;
      this.phase += 1;
      if (this.phase >= this.step) {
        this.emit(this.acc / this.accCount);
        this.acc = 0;
        this.accCount = 0;
        this.phase -= this.step;
      }
    } else {
      // Interpolate between the previous input sample and this one.
      while (this.phase < 1) {
        this.emit(this.prev + (x - this.prev) * this.phase);
        this.phase += this.step;
      }
      this.phase -= 1;
      this.prev = x;
    }
  }

  process(inputs) {
    if (this.done) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += input[c][i];
      this.push(sum / channels);
    }
    return true;
  }
}

registerProcessor('pcm-capture', PcmCapture);
