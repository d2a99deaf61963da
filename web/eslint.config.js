// ESLint for the page's own scripts (static/js): `npm --prefix web run lint`. Vendor files come from
// node_modules and are not linted. The scripts are classic scripts, not modules: each runs in its
// own function scope and shares only what it puts on `window` (window.capsearch, from page.js). The
// hash worker and the audio worklet run in scopes of their own, with neither `window` nor `document`.
'use strict';

const js = require('@eslint/js');
const globals = require('globals');

const WORKER = 'static/js/hash-worker.js';
const WORKLET = 'static/js/pcm-worklet.js';

function scripts(files, scope, ignores) {
  return {
    files,
    ignores: ignores || [],
    languageOptions: { ecmaVersion: 2022, sourceType: 'script', globals: scope },
  };
}

module.exports = [
  js.configs.recommended,
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  scripts(['static/js/**/*.js'], { ...globals.browser, htmx: 'readonly' }, [WORKER, WORKLET]),
  // importScripts(hash-wasm's browser build) defines `hashwasm`.
  scripts([WORKER], { ...globals.worker, hashwasm: 'readonly' }),
  scripts([WORKLET], globals.audioWorklet),
];
