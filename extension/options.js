// The options page: the card service's address and write token (written to
// chrome.storage.local, never read back: the page only learns whether one
// is saved), and the user's own site adapters.
import { checkAdapters, checkServiceUrl, originPattern, permissionOrigin } from './lib.js';

const $ = (id) => document.getElementById(id);
const ask = (msg) => chrome.runtime.sendMessage(msg);

function say(id, ok, text) {
  const box = $(id);
  box.className = `status ${ok ? 'ok' : 'bad'}`;
  box.textContent = text;
}

function showTokenState(saved) {
  const state = $('token-state');
  state.replaceChildren();
  if (saved) {
    const strong = document.createElement('span');
    strong.className = 'saved';
    strong.textContent = 'A token is saved.';
    state.append(strong, ' It is never shown again; type a new one to replace it.');
  } else {
    state.append('No token is saved. Create one on the card service\'s computer with ');
    const code = document.createElement('code');
    code.textContent = 'bankbridge token create --scope write --name browser-extension';
    state.append(code, '.');
  }
  $('forget-token').hidden = !saved;
}

function showShipped(shipped) {
  const body = $('shipped').tBodies[0];
  body.replaceChildren();
  for (const a of shipped) {
    const row = body.insertRow();
    row.insertCell().textContent = a.name;
    const pages = row.insertCell();
    for (const p of a.matches) {
      const code = document.createElement('code');
      code.textContent = p;
      pages.append(code, ' ');
    }
    row.insertCell().textContent = a.mode;
    row.insertCell().textContent = a.submit ? 'yes' : 'no';
  }
}

function showRegistered(patterns) {
  $('registered').textContent = patterns.length
    ? `Your adapters run on: ${patterns.join(', ')}`
    : '';
}

async function load() {
  const s = await ask({ type: 'settings' });
  $('service-url').value = s.serviceUrl ?? '';
  showTokenState(s.tokenSaved);
  showShipped(s.shipped);
  $('user-adapters').value = s.userAdapters.length ? JSON.stringify(s.userAdapters, null, 2) : '';
  showRegistered(s.registered);
}

$('service-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const checked = checkServiceUrl($('service-url').value);
  if (checked.error) {
    say('service-status', false, checked.error);
    return;
  }
  const typed = $('token').value.trim();
  if (typed && !/^bb_[A-Za-z0-9_-]{8,}$/.test(typed)) {
    say('service-status', false, 'That is not a bankbridge token: they start with bb_ (bankbridge token create prints one).');
    return;
  }
  // https hosts are asked for one by one, while the click still counts as
  // the user's (loopback is granted at install).
  const origin = originPattern(checked.url);
  let granted = true;
  try {
    granted = await chrome.permissions.request({ origins: [origin] });
  } catch (e) {
    granted = false;
  }
  if (!granted) {
    say('service-status', false, `Chrome did not allow the extension to reach ${origin}; nothing was saved.`);
    return;
  }
  const { tokenSaved } = await ask({ type: 'settings' });
  if (!typed && !tokenSaved) {
    say('service-status', false, 'Give a write token (bb_…).');
    return;
  }
  await chrome.storage.local.set({ serviceUrl: checked.url, ...(typed ? { token: typed } : {}) });
  $('token').value = '';
  $('service-url').value = checked.url;
  showTokenState(true);
  say('service-status', true, `Saved: the card service at ${checked.url}${typed ? ' and the token' : ''}.`);
});

$('test-service').addEventListener('click', async () => {
  say('service-status', true, 'Testing…');
  const r = await ask({ type: 'test' });
  say('service-status', r.ok, r.message);
});

$('forget-token').addEventListener('click', async () => {
  await chrome.storage.local.remove('token');
  showTokenState(false);
  say('service-status', true, 'The token is forgotten.');
});

const selectorOk = (selector) => {
  try {
    document.createDocumentFragment().querySelector(selector);
    return true;
  } catch {
    return false;
  }
};

$('save-adapters').addEventListener('click', async () => {
  const text = $('user-adapters').value.trim();
  let value = [];
  if (text) {
    try {
      value = JSON.parse(text);
    } catch (e) {
      say('adapters-status', false, `Not JSON: ${e.message}`);
      return;
    }
  }
  const { adapters, errors } = checkAdapters(value, selectorOk);
  if (errors.length) {
    say('adapters-status', false, `Not saved:\n${errors.join('\n')}`);
    return;
  }
  const origins = [...new Set(adapters.flatMap((a) => a.matches).map(permissionOrigin))];
  let granted = true;
  if (origins.length) {
    try {
      granted = await chrome.permissions.request({ origins });
    } catch (e) {
      say('adapters-status', false, `Chrome refused the pages: ${e.message}`);
      return;
    }
  }
  await chrome.storage.local.set({ userAdapters: adapters });
  const { registered } = await ask({ type: 'syncScripts' });
  showRegistered(registered);
  say('adapters-status', granted, granted
    ? `Saved ${adapters.length} adapter(s).`
    : `Saved ${adapters.length} adapter(s), but Chrome did not allow access to their pages: they do not run until you save again and allow it.`);
});

load().catch((e) => say('service-status', false, `Could not load the settings: ${e}`));
