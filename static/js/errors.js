// The error banner (#errors): errors from the server and from the page's own checks, the
// newest few, each dismissable.

import { h, ui } from './dom.js';
import { invalidate } from './render.js';
import { state } from './state.js';

const MAX_ERRORS = 5;
let errorCounter = 0;

export function pushError(code, message) {
  errorCounter += 1;
  state.errors.push({ id: errorCounter, code: String(code), message: String(message) });
  if (state.errors.length > MAX_ERRORS) state.errors.shift();
  invalidate('errors');
}

function dismissError(id) {
  state.errors = state.errors.filter((e) => e.id !== id);
  invalidate('errors');
}

export function renderErrors() {
  ui.errors.replaceChildren(...state.errors.map((e) => h('div', { class: 'error',
    dataset: { code: e.code } },
  h('strong', { class: 'error-code' }, e.code), ' ', h('span', { class: 'error-message' }, e.message),
  h('button', { type: 'button', class: 'error-dismiss', 'aria-label': 'Dismiss error',
    onclick: () => dismissError(e.id) }, '✕'))));
}
