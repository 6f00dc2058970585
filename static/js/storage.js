// What the page keeps in localStorage: the name last used, so the field starts with it.

const NAME_KEY = 'roomcast.name';

export function loadName() {
  return localStorage.getItem(NAME_KEY) || '';
}

export function saveName(name) {
  localStorage.setItem(NAME_KEY, name);
}
